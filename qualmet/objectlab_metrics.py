"""cleanlab's ObjectLab scores as qualmet metrics (optional: registered only when cleanlab is installed).

Installed as the entry point ``objectlab`` of the group ``qualmet.metrics`` (``pip install
'qualmet[objectlab]'``). Four vectorised metrics, all ``needs={"predictions"}``, all ``worse="low"``
(ObjectLab's scores lie in [0, 1], lower = more likely mislabelled), all computed by cleanlab's public
functions in ``cleanlab.object_detection.rank`` with their default parameters:

=======================  ======  ==============================================================
metric                   level   value
=======================  ======  ==============================================================
objectlab_quality        frame   ``get_label_quality_scores(labels, predictions)[i]``
objectlab_overlooked     frame   ``pool_box_scores_per_image(compute_overlooked_box_scores(...))[i]``
objectlab_badloc         object  ``compute_badloc_box_scores(...)[i][j]`` for label box j of image i
objectlab_swap           object  ``compute_swap_box_scores(...)[i][j]``
=======================  ======  ==============================================================

What cleanlab 2.9 computes (defaults: alpha = 0.9, low threshold 0.5, high threshold 0.95,
temperature T = 0.1). The similarity of a label box and a predicted box is
``sim = alpha * IoU + (1 - alpha) * exp(-0.1 * d)``, d the distance between their centres in pixels;
``s_min`` is the smallest non-zero similarity over the whole data set (so every score depends on the
whole data set: the metrics are vectorised, one call for all frames).

* badloc, per label box of class k: the largest ``sim`` with a class-k prediction of score > 0.5 that
  overlaps it (IoU > 0); 1.0 when there is none. A box the detector places elsewhere scores low.
* swap, per label box of class k: ``max(s_min, 1 - sim)`` for the most similar prediction of another
  class with score > 0.95; 1.0 when there is none; ``s_min`` when another label box of another class
  overlaps it with IoU >= 0.95 (a box labelled twice).
* overlooked belongs to *predictions*, not labels: for each prediction with score >= 0.95 that overlaps
  no label box, the largest ``sim`` with a label box of its class, or ``s_min * (1 - score)`` when the
  frame has no label of that class; NaN for every other prediction. qualmet has no row for a box that
  is not labelled, so ``objectlab_overlooked`` is the frame's pooled score, ObjectLab's own
  ``pool_box_scores_per_image``: the softmin ``sum_i s_i w_i`` with ``w = softmax(-s / T)`` over the
  frame's defined scores (close to their minimum), 1.0 when there is none.
* quality: ``exp(sum_t w_t * log(1e-100 + pooled_t))`` over t in (overlooked, badloc, swap), each
  pooled per frame like overlooked, with cleanlab's default weights. ``issues_from_scores(quality,
  threshold=0.1)`` is cleanlab's own cut: frames at or below 0.1, worst first.

The detector's scores are used as they are: ObjectLab's thresholds assume calibrated scores (see
docs/objectlab.md for a detector whose scores are not). Box format: qualmet's xywh becomes xyxy;
classes become indices 0..K-1 over the categories seen in labels or predictions (ObjectLab only
compares them for equality, so unused categories change nothing).

Without cleanlab, importing this module registers nothing and raises nothing, so ``qualmet metrics
list`` shows no warning. cleanlab itself is imported only when a metric runs: it takes 1-2 s to import,
which every registry load (each CLI command, each worker) would otherwise pay. Its version is part of
each metric's ``version``, so a cleanlab upgrade recomputes cached values.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pandas as pd

from qualmet.boxes import xywh_to_xyxy

BOX = ["x", "y", "w", "h"]


def cleanlab_version() -> str | None:
    """cleanlab's installed version, "unknown" when it is importable without package metadata, None
    when it is not there (or hidden: ``sys.modules["cleanlab"] = None``). Finds, does not import."""
    try:
        if importlib.util.find_spec("cleanlab") is None:
            return None
    except (ImportError, ValueError):  # a broken parent package or a module without a spec
        return None
    try:
        return metadata.version("cleanlab")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ObjectLabInputs:
    """qualmet's tables in ObjectLab's formats, one entry per frame in ``images`` order.

    ``labels[i] = {"bboxes": (L, 4) xyxy, "labels": (L,) class index}``;
    ``predictions[i][k] = (M_k, 5)`` rows ``[x1, y1, x2, y2, score]`` of class index k;
    ``rows[i]``: the positions in ``annotations`` of ``labels[i]``'s boxes, in the same order."""

    image_ids: np.ndarray
    categories: np.ndarray
    labels: list[dict]
    predictions: list[list[np.ndarray]]
    rows: list[np.ndarray]


def _rows_by_image(image_col: np.ndarray, ids: np.ndarray) -> list[np.ndarray]:
    """Positions of each id's rows, in table order (a stable sort, then one slice per id)."""
    order = np.argsort(image_col, kind="stable")
    s = image_col[order]
    return [order[a:b] for a, b in zip(np.searchsorted(s, ids, "left"), np.searchsorted(s, ids, "right"))]


def to_objectlab_inputs(annotations: pd.DataFrame, images: pd.DataFrame, predictions: pd.DataFrame) -> ObjectLabInputs:
    """Convert labels and predictions (qualmet's tables, xywh) to ObjectLab's per-image inputs.
    Predictions and labels of frames not in ``images`` are left out."""
    ids = images["id"].to_numpy(np.int64)
    a_cat = annotations["category_id"].to_numpy(np.int64)
    p_cat = predictions["category_id"].to_numpy(np.int64)
    cats = np.union1d(a_cat, p_cat)
    if not len(cats):  # cleanlab reads the shape of predictions[0][0]: keep one (empty) class array
        cats = np.zeros(1, np.int64)
    a_box = xywh_to_xyxy(annotations[BOX].to_numpy(np.float64).reshape(-1, 4))
    a_cls = np.searchsorted(cats, a_cat)
    p_rows = np.c_[xywh_to_xyxy(predictions[BOX].to_numpy(np.float64).reshape(-1, 4)),
                   predictions["score"].to_numpy(np.float64)].reshape(-1, 5)
    p_cls = np.searchsorted(cats, p_cat)
    rows = _rows_by_image(annotations["image_id"].to_numpy(np.int64), ids)
    p_by_image = _rows_by_image(predictions["image_id"].to_numpy(np.int64), ids)
    labels = [{"bboxes": a_box[r], "labels": a_cls[r]} for r in rows]
    preds = []
    for r in p_by_image:
        cls = p_cls[r]
        preds.append([p_rows[r[cls == k]] for k in range(len(cats))])
    return ObjectLabInputs(ids, cats, labels, preds, rows)


def objectlab_scores(inputs: ObjectLabInputs) -> dict[str, object]:
    """cleanlab's scores for ``inputs`` with its defaults: ``quality`` and ``overlooked`` (one per
    frame), ``badloc`` and ``swap`` (per frame, one per label box)."""
    from cleanlab.object_detection import rank

    labels, preds = inputs.labels, inputs.predictions
    return {"quality": np.asarray(rank.get_label_quality_scores(labels, preds, verbose=False), np.float64),
            "overlooked": rank.pool_box_scores_per_image(rank.compute_overlooked_box_scores(labels=labels, predictions=preds)),
            "badloc": rank.compute_badloc_box_scores(labels=labels, predictions=preds),
            "swap": rank.compute_swap_box_scores(labels=labels, predictions=preds)}


_LAST: list = []  # [(content key, inputs, scores)]: the four metrics are called one after another on one data set


def _content_key(annotations: pd.DataFrame, images: pd.DataFrame, predictions: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for df, cols in ((images, ["id"]), (annotations, ["image_id", "category_id"] + BOX),
                     (predictions, ["image_id", "category_id"] + BOX + ["score"])):
        h.update(pd.util.hash_pandas_object(df[cols], index=False).to_numpy().tobytes() + b"\0")
    return h.hexdigest()


def _scores_for(annotations: pd.DataFrame, images: pd.DataFrame, predictions: pd.DataFrame):
    """(inputs, scores), computed once for the four metrics of a run: cleanlab's similarity matrices
    are pure-Python loops, four times that for one data set would be waste. Keyed by content (each
    metric gets its own copies of the tables); only the last data set is kept."""
    key = _content_key(annotations, images, predictions)
    if not _LAST or _LAST[0][0] != key:
        inputs = to_objectlab_inputs(annotations, images, predictions)
        _LAST[:] = [(key, inputs, objectlab_scores(inputs) if len(inputs.image_ids) else None)]
    return _LAST[0][1], _LAST[0][2]


def _per_frame(name: str, annotations, images, predictions) -> pd.Series:
    inputs, scores = _scores_for(annotations, images, predictions)
    values = scores[name] if scores is not None else np.zeros(0)
    return pd.Series(np.asarray(values, np.float64), index=inputs.image_ids)


def _per_box(name: str, annotations, images, predictions) -> np.ndarray:
    """Per-box scores back in ``annotations``' row order (NaN for a box of a frame not in ``images``)."""
    inputs, scores = _scores_for(annotations, images, predictions)
    out = np.full(len(annotations), np.nan)
    for rows, values in zip(inputs.rows, scores[name] if scores is not None else []):
        out[rows] = values
    return out


def objectlab_quality(annotations, images, predictions):
    """ObjectLab's label quality score of the frame, ``rank.get_label_quality_scores`` (defaults)."""
    return _per_frame("quality", annotations, images, predictions)


def objectlab_overlooked(annotations, images, predictions):
    """ObjectLab's overlooked sub-score of the frame: its softmin pooling (T = 0.1) of the overlooked
    scores of the confident predictions (score >= 0.95) that overlap no label; 1.0 when none."""
    return _per_frame("overlooked", annotations, images, predictions)


def objectlab_badloc(annotations, images, predictions):
    """ObjectLab's badly-located score of each label box, ``rank.compute_badloc_box_scores``."""
    return _per_box("badloc", annotations, images, predictions)


def objectlab_swap(annotations, images, predictions):
    """ObjectLab's swapped-class score of each label box, ``rank.compute_swap_box_scores``."""
    return _per_box("swap", annotations, images, predictions)


METRICS = {  # name: (function, level, one-line description, as the review quotes it)
    "objectlab_quality": (objectlab_quality, "frame",
                          "cleanlab ObjectLab's label quality of the frame (<= 0.1: its issue cut)"),
    "objectlab_overlooked": (objectlab_overlooked, "frame",
                             "ObjectLab: a confident prediction (>= 0.95) no label touches (1 = none)"),
    "objectlab_badloc": (objectlab_badloc, "object",
                         "ObjectLab: similarity to the best overlapping same-class prediction (1 = none)"),
    "objectlab_swap": (objectlab_swap, "object",
                       "ObjectLab: 1 - similarity to a confident other-class prediction (1 = none)"),
}


def _register(cleanlab: str) -> None:
    import qualmet

    for name, (func, level, description) in METRICS.items():
        qualmet.metric(name=name, level=level, needs={"predictions"}, worse="low", vectorised=True,
                       description=description, version=f"1+cleanlab{cleanlab}")(func)


CLEANLAB = cleanlab_version()
if CLEANLAB is not None:  # without cleanlab the module defines its functions and registers nothing
    _register(CLEANLAB)
