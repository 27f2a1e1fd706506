"""FiftyOne both ways, through FiftyOne's own COCO parsing (``fiftyone.utils.coco``, which needs no database).

To FiftyOne: :func:`metrics_coco` is the data set as COCO with every object metric of a metrics run as an extra
key of its annotation and every frame metric as an extra key of its image (``qualmet_<metric>``: a bare name
such as ``confidence`` would shadow FiftyOne's own ``Detection.confidence``). FiftyOne's COCO importer loads
such keys as ``Detection`` attributes (``extra_attrs=True``); :func:`to_fiftyone` does exactly that with
``fiftyone.utils.coco`` and returns, per image file, the ``Detections`` and the frame metrics as sample
fields. With a FiftyOne database::

    labels = qualmet.fiftyone_bridge.write_metrics_coco("runs/m", "data.json", "runs/m/fiftyone.json")
    ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path="images",
                             labels_path=labels, extra_attrs=True, include_id=True)

From FiftyOne: :func:`from_fiftyone` reads fields of samples (``fo.Dataset`` samples, or plain dicts with
``filepath`` and the label field) and of their detections, e.g. Brain's ``mistakenness`` and
``uniqueness``, into a qualmet metrics run folder (objects.parquet, frames.parquet, run.json) that
selection, experiments and the report read like any other run.

The bridge reads and writes run folders as plain data and computes no metric, so it can live in an
environment of its own: fiftyone requires OpenCV < 5, while qualmet pins the OpenCV its metric values
were computed with.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import __version__, atomic
from .dataset import Dataset
from .errors import QualmetError
from .metric_run import FRAME_BASE, OBJECT_BASE

PREFIX = "qualmet_"
REVIEW_KEYS = ("qualmet_score", "qualmet_issue", "qualmet_reasons")  # what an export with review= adds


def _dataset(dataset: Dataset | str | os.PathLike) -> Dataset:
    from .formats import load_coco

    return dataset if isinstance(dataset, Dataset) else load_coco(dataset)


def read_run(run_dir: str | os.PathLike, dataset: Dataset | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(objects, frames, run.json) of a metrics run folder, as plain tables; with ``dataset``, the run
    must have been computed on it (the content hash run.json records)."""
    from .metric_run import MetricRun
    from .steps import dataset_hash

    run = MetricRun.load(run_dir)
    recorded = (run.info.get("dataset") or {}).get("hash")
    if dataset is not None and recorded and recorded != dataset_hash(dataset):
        raise QualmetError(f"{run_dir}: this metrics run was computed on another data set "
                           f"({(run.info.get('dataset') or {}).get('path')}), not {dataset.source}")
    return run.objects, run.frames, run.info


def _json_value(v: Any) -> Any:
    """A metric value for JSON: a float, or None where the metric has none (NaN)."""
    v = float(v)
    return None if math.isnan(v) else v


def metrics_coco(run_dir: str | os.PathLike, dataset: Dataset | str | os.PathLike, prefix: str = PREFIX,
                 review: str | os.PathLike | None = None) -> dict:
    """The data set as a COCO dict whose annotations and images carry the run's metrics as extra keys;
    with ``review`` (a ``qualmet review`` folder), each annotation also carries the queue's
    ``qualmet_score``, ``qualmet_issue`` and ``qualmet_reasons``."""
    ds = _dataset(dataset)
    if review is not None:
        ds = _with_review(ds, Path(review))
    objects, frames, _ = read_run(run_dir, ds)
    coco = ds.to_coco()
    obj_cols = [c for c in objects.columns if c not in OBJECT_BASE]
    frm_cols = [c for c in frames.columns if c not in FRAME_BASE]
    by_ann = objects.set_index("annotation_id")[obj_cols]
    by_img = frames.set_index("image_id")[frm_cols]
    for a in coco["annotations"]:
        if a["id"] in by_ann.index:
            a.update({prefix + c: _json_value(v) for c, v in by_ann.loc[a["id"]].items()})
    for im in coco["images"]:
        if im["id"] in by_img.index:
            im.update({prefix + c: _json_value(v) for c, v in by_img.loc[im["id"]].items()})
    return coco


def _with_review(ds: Dataset, folder: Path) -> Dataset:
    """``ds`` with the review queue's keys on its annotations, matched by annotation id; a queue made on
    other labels (an id it scores that ``ds`` lacks) is an error."""
    from .formats import load_coco

    reviewed = load_coco(folder / "review.json").annotations
    keys = [c for c in REVIEW_KEYS if c in reviewed.columns]
    unknown = set(reviewed["id"].astype(int)) - set(ds.annotations["id"].astype(int))
    if unknown or not keys:
        raise QualmetError(f"{folder / 'review.json'}: not a review of this data set's labels "
                           f"({'annotation id ' + str(min(unknown)) + ' is not in it' if unknown else 'no qualmet_score'})")
    anns = ds.annotations.drop(columns=[c for c in keys if c in ds.annotations.columns])
    anns = anns.merge(reviewed[["id", *keys]], on="id", how="left")
    out = ds.copy()
    out.annotations = anns
    return out


def write_metrics_coco(run_dir: str | os.PathLike, dataset: Dataset | str | os.PathLike,
                       out_json: str | os.PathLike, prefix: str = PREFIX, review: str | os.PathLike | None = None) -> str:
    """Write :func:`metrics_coco` atomically to ``out_json`` (for FiftyOne's COCO importer); returns its
    path as a string (FiftyOne's JSON loader takes no ``Path``)."""
    return str(atomic.write_json(out_json, metrics_coco(run_dir, dataset, prefix, review)))


def _fiftyone():
    try:
        import fiftyone.core.labels as fol
        import fiftyone.utils.coco as fouc
    except ImportError:
        raise QualmetError("the FiftyOne bridge needs fiftyone (pip install fiftyone); fiftyone requires OpenCV < 5 "
                           "while qualmet pins 5.x (metric values depend on it), so install it in another "
                           "environment than the one that computes metrics: the bridge only reads run folders") from None
    return fol, fouc


def coco_to_samples(coco: dict, images: Path | None = None) -> list[dict]:
    """A COCO dict parsed by FiftyOne's COCO functions into sample dicts: ``filepath`` (under ``images``),
    ``ground_truth`` (``fo.Detections``, extra annotation keys as attributes, ``coco_id`` the annotation
    id) and each image's extra keys as fields."""
    fol, fouc = _fiftyone()
    classes_map, supercategory_map = fouc.parse_coco_categories(coco.get("categories", []))
    by_image: dict[Any, list] = {}
    for a in coco.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(fouc.COCOObject.from_anno_dict(dict(a), extra_attrs=True))
    std = {"id", "file_name", "width", "height", "license", "coco_url", "flickr_url", "date_captured"}
    samples = []
    for im in coco.get("images", []):
        dets = [o.to_detection((im["width"], im["height"]), classes_map=classes_map,
                               supercategory_map=supercategory_map, include_id=True)
                for o in by_image.get(im["id"], [])]
        path = (images / im["file_name"]) if images is not None else Path(im["file_name"])
        samples.append({"filepath": str(path), "ground_truth": fol.Detections(detections=[d for d in dets if d]),
                        **{k: v for k, v in im.items() if k not in std}})
    return samples


def to_fiftyone(run_dir: str | os.PathLike, dataset: Dataset | str | os.PathLike, prefix: str = PREFIX) -> list[dict]:
    """The run's metrics on FiftyOne labels: one sample dict per image (see :func:`coco_to_samples`), every
    object metric an attribute of its ``Detection``, every frame metric a field of its sample."""
    ds = _dataset(dataset)
    return coco_to_samples(metrics_coco(run_dir, ds, prefix), ds.image_root)


def _get(obj: Any, name: str) -> Any:
    """A field of a FiftyOne sample or label (or of a dict), None when it has none."""
    try:
        return obj[name]
    except (KeyError, AttributeError, TypeError):
        return getattr(obj, name, None)


def _number(v: Any, where: str) -> float:
    if v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise QualmetError(f"{where}: a metric must be a number, got {v!r}") from None


def _frame_of(samples_path: str, ds: Dataset, by_name: dict[str, list[int]]) -> int:
    """The data set's image for a sample's file: its path under the image root, else its unique base name."""
    p = Path(samples_path)
    if ds.image_root is not None:
        try:
            rel = p.resolve().relative_to(Path(ds.image_root).resolve()).as_posix()
            if rel in by_name and len(by_name[rel]) == 1:
                return by_name[rel][0]
        except ValueError:
            pass
    ids = by_name.get(p.name, [])
    if len(ids) != 1:
        why = "is not an image of the data set" if not ids else f"matches {len(ids)} images by file name"
        raise QualmetError(f"sample {samples_path}: {why}")
    return ids[0]


def _object_of(det: Any, frame: pd.DataFrame, names: dict[int, str], size: tuple[int, int], where: str) -> int:
    """The annotation a detection is: its ``coco_id`` when it has one, else the box of its class it
    overlaps most (IoU >= 0.9)."""
    from .boxes import iou_matrix

    cid = _get(det, "coco_id")
    if cid is not None:
        if int(cid) not in set(frame["id"]):
            raise QualmetError(f"{where}: detection with coco_id {cid} is not an annotation of this frame")
        return int(cid)
    same = frame[frame["category_id"].map(names) == _get(det, "label")]
    b = np.asarray(_get(det, "bounding_box"), dtype=float) * [size[0], size[1], size[0], size[1]]
    iou = iou_matrix(b[None, :], same[["x", "y", "w", "h"]].to_numpy(float))[0] if len(same) else np.zeros(0)
    if not len(iou) or iou.max() < 0.9:
        raise QualmetError(f"{where}: a {_get(det, 'label')!r} detection at {np.round(b, 1).tolist()} matches no "
                           "box of the data set (keep coco_id on the detections: include_id=True)")
    return int(same["id"].iat[int(iou.argmax())])


def _fields(values: Iterable[str] | None, found: Iterable[str], prefix: str) -> list[str]:
    """The fields asked for, else every ``prefix`` field but the review queue's (an export with
    ``review=`` reads back as the metrics run it came from)."""
    if values is not None:
        return list(values)
    return sorted({f for f in found if f.startswith(prefix) and f not in REVIEW_KEYS})


def _detections(label: Any) -> list:
    """The detections of a label field: ``fo.Detections`` (or a dict like it), a list, or none."""
    if label is None:
        return []
    if isinstance(label, (list, tuple)):
        return list(label)
    return list(_get(label, "detections") or [])


def _attribute_names(det: Any) -> list[str]:
    if isinstance(det, dict):
        return list(det)
    return [k for k, _ in det.iter_attributes()] if hasattr(det, "iter_attributes") else []


def from_fiftyone(samples: Iterable[Any], dataset: Dataset | str | os.PathLike, out: str | os.PathLike | None = None,
                  object_fields: Iterable[str] | None = None, frame_fields: Iterable[str] | None = None,
                  label_field: str = "ground_truth", worse: dict[str, str] | None = None, prefix: str = PREFIX):
    """A qualmet metrics run (:class:`qualmet.metric_run.MetricRun`, written to ``out`` when given) from the
    fields of FiftyOne samples: ``object_fields`` of the detections in ``label_field`` (by default every
    attribute named ``<prefix>...`` but the review queue's ``qualmet_score``, ``qualmet_issue`` and
    ``qualmet_reasons``), ``frame_fields`` of the samples (likewise). A metric is named after
    its field, less ``prefix``; ``worse`` sets each one's suspicious end ("low", the default, or "high":
    e.g. ``{"mistakenness": "high"}``). Samples are matched to frames by file path, detections to boxes
    by ``coco_id``, else by class and box. Objects and frames no sample gives a value for are NaN."""
    from .metric_run import MetricRun
    from .steps import dataset_hash

    ds = _dataset(dataset)
    samples = list(samples)
    worse = dict(worse or {})
    bad = {k: v for k, v in worse.items() if v not in ("low", "high")}
    if bad:
        raise QualmetError(f"worse must be 'low' or 'high', got {bad}")
    dets_of = [(s, _detections(_get(s, label_field))) for s in samples]
    object_fields = _fields(object_fields, (a for _, ds_ in dets_of for d in ds_ for a in _attribute_names(d)), prefix)
    frame_fields = _fields(frame_fields, (k for s in samples for k in (s if isinstance(s, dict) else
                                                                       getattr(s, "field_names", ()))), prefix)
    col = {f: f[len(prefix):] if f.startswith(prefix) and len(f) > len(prefix) else f for f in object_fields + frame_fields}
    clash = [c for c in col.values() if c in OBJECT_BASE + FRAME_BASE]
    if clash or len(set(col.values())) < len(col):
        raise QualmetError(f"fields {', '.join(col)} give the metric names {', '.join(col.values())}: each must be "
                           f"unique and none of {', '.join(dict.fromkeys(OBJECT_BASE + FRAME_BASE))}")
    by_name: dict[str, list[int]] = {}
    for iid, fn in zip(ds.images["id"], ds.images["file_name"]):
        for k in {str(fn), Path(str(fn)).name}:
            by_name.setdefault(k, []).append(int(iid))
    names, sizes = ds.category_names, ds.images.set_index("id")[["width", "height"]]
    anns_by_img = {int(k): g for k, g in ds.annotations.groupby("image_id")}
    obj_vals: dict[str, dict[int, float]] = {f: {} for f in object_fields}
    frm_vals: dict[str, dict[int, float]] = {f: {} for f in frame_fields}
    for s, dets in dets_of:
        where = f"sample {_get(s, 'filepath')}"
        img = _frame_of(str(_get(s, "filepath")), ds, by_name)
        for f in frame_fields:
            frm_vals[f][img] = _number(_get(s, f), f"{where}: field {f}")
        frame = anns_by_img.get(img, ds.annotations.iloc[0:0])
        for det in dets:
            aid = _object_of(det, frame, names, tuple(int(v) for v in sizes.loc[img]), where)
            for f in object_fields:
                obj_vals[f][aid] = _number(_get(det, f), f"{where}: annotation {aid}: {f}")
    objects = ds.annotations[["id"] + OBJECT_BASE[1:]].rename(columns={"id": "annotation_id"}).reset_index(drop=True)
    for f in object_fields:
        objects[col[f]] = objects["annotation_id"].map(obj_vals[f]).astype("float64")
    frames = ds.images[["id"] + FRAME_BASE[1:]].rename(columns={"id": "image_id"}).reset_index(drop=True)
    for f in frame_fields:
        frames[col[f]] = frames["image_id"].map(frm_vals[f]).astype("float64")
    metrics = [{"name": col[f], "level": level, "needs": [], "worse": worse.get(col[f], worse.get(f, "low")),
                "version": "1", "vectorised": False, "description": f"FiftyOne field {f!r}", "source": "fiftyone"}
               for level, fields in (("object", object_fields), ("frame", frame_fields)) for f in fields]
    info = {"qualmet_version": __version__, "source": "fiftyone", "label_field": label_field,
            "dataset": {"path": ds.source, "hash": dataset_hash(ds), "images": len(ds.images),
                        "annotations": len(ds.annotations), "skipped_items": [],
                        "image_root": str(Path(ds.image_root).resolve()) if ds.image_root is not None else None},
            "predictions": None, "metrics": metrics, "errors": [], "errors_by_metric": {}, "skipped_frames": []}
    run = MetricRun(objects, frames, info)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        run.save(out)
    return run
