"""COCOeval (bbox) behind one door: the 12 stats from pycocotools or faster-coco-eval, and COCO's own
per-image matches, from which :func:`qualmet.evaluate.match` takes its TP/FP/FN flags.

The flags are read from pycocotools' ``evalImgs`` (``dtMatches``/``gtMatches``/``dtIgnore``) at the flags'
IoU threshold, area "all", ``maxDets`` 100, so a prediction counts as a TP exactly when COCO's AP counts it
as one; beyond the 100 best-scoring predictions of a class on a frame COCO counts nothing, and neither do
the flags. faster-coco-eval keeps its per-image matches in C++ (no ``evalImgs``), so matches always come
from pycocotools; with the default threshold, the pycocotools backend's own evaluation is reused.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pandas as pd

from .dataset import Dataset
from .errors import QualmetError

COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
SMALL, LARGE = 32 ** 2, 96 ** 2  # COCO's area ranges, bounds included on both sides: [0, S], [S, L], [L, inf)
BACKENDS = ("pycocotools", "faster-coco-eval")
MAX_DETS = 100  # COCO's cap per frame and class for AP100 and for the flags


def coco_gt(gt: Dataset) -> dict[str, Any]:
    """The ground truth as a COCO dict. Annotation ids are renumbered 1..N (row k has id k+1): COCOeval
    marks an unmatched detection with id 0, so a box whose id is 0 would never count as found."""
    a = gt.annotations
    area = a["area"].where(np.isfinite(a["area"]), a["w"] * a["h"]) if len(a) else a["w"]
    anns = [{"id": k, "image_id": int(i), "category_id": int(c), "bbox": [float(x), float(y), float(w), float(h)],
             "area": float(ar), "iscrowd": int(cr)}
            for k, (i, c, x, y, w, h, ar, cr) in enumerate(zip(a["image_id"], a["category_id"], a["x"], a["y"], a["w"],
                                                              a["h"], area, a["iscrowd"]), start=1)]
    return {"images": [{"id": int(i), "width": int(w), "height": int(h)}
                       for i, w, h in zip(gt.images["id"], gt.images["width"], gt.images["height"])],
            "annotations": anns,
            "categories": [{"id": int(c), "name": str(n)} for c, n in zip(gt.categories["id"], gt.categories["name"])]}


def coco_results(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """Predictions as a COCO results list; COCO's loadRes numbers them 1..N in this order (row k: id k+1)."""
    return [{"image_id": int(i), "category_id": int(c), "bbox": [float(x), float(y), float(w), float(h)],
             "score": float(s)}
            for i, c, x, y, w, h, s in zip(preds["image_id"], preds["category_id"], preds["x"], preds["y"],
                                           preds["w"], preds["h"], preds["score"])]


def check_backend(backend: str) -> None:
    """Refuse an unknown backend, and faster-coco-eval when it is not installed, before any work."""
    if backend not in BACKENDS:
        raise QualmetError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "faster-coco-eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise QualmetError("the faster-coco-eval backend needs the faster-coco-eval package: "
                               "pip install 'qualmet[fast-eval]' (or pip install faster-coco-eval)") from None


def _run(gt: Dataset, preds: pd.DataFrame, backend: str, summarize: bool = True, params: dict | None = None) -> Any:
    """A finished COCOeval object (bbox) of ``backend``; ``params`` overrides COCOeval's parameters."""
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
        quiet = {"print_function": lambda *a, **k: None}
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        quiet = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        cg = COCO(**quiet)
        cg.dataset = coco_gt(gt)
        cg.createIndex()
        cd = cg.loadRes(coco_results(preds))
        ev = COCOeval(cg, cd, "bbox", **quiet)
        for k, v in (params or {}).items():
            setattr(ev.params, k, v)
        ev.evaluate()
        if summarize:
            ev.accumulate()
            ev.summarize()
    return ev


def coco_eval(gt: Dataset, preds: pd.DataFrame, backend: str = "pycocotools"
              ) -> tuple[dict[str, float | None], dict[int, float | None], Any]:
    """Run COCOeval (bbox) silently: (12 named stats, AP per category id, the COCOeval object or None).

    A stat COCO cannot compute is ``None``: no object of that size, or no (non-crowd) ground-truth box
    at all (COCO's -1). With no predictions, AP and AR are 0 where there are boxes to find.
    """
    check_backend(backend)
    cat_ids = [int(c) for c in gt.categories["id"]]
    preds = preds[preds["image_id"].isin(gt.images["id"])] if len(preds) else preds
    if not len(preds) or not len(gt.annotations):
        # as COCOeval would say: 0 where there are objects to find, n/a (None) where there are none: for a
        # size with no objects, or for everything when the ground truth has no box (crowd regions do not count)
        a = gt.annotations[gt.annotations["iscrowd"] == 0]
        area = (a["area"].where(np.isfinite(a["area"]), a["w"] * a["h"]) if "area" in a else a["w"] * a["h"]).to_numpy(float)
        present = {"all": bool(len(a)), "s": bool((area <= SMALL).any()),
                   "m": bool(((area >= SMALL) & (area <= LARGE)).any()), "l": bool((area >= LARGE).any())}
        size_of = {"APs": "s", "APm": "m", "APl": "l", "ARs": "s", "ARm": "m", "ARl": "l"}
        stats = {k: (0.0 if present[size_of.get(k, "all")] else None) for k in COCO_STATS}
        return stats, {c: (0.0 if (a["category_id"] == c).any() else None) for c in cat_ids}, None
    ev = _run(gt, preds, backend)
    stats = {k: (None if v < 0 else float(v)) for k, v in zip(COCO_STATS, ev.stats)}
    prec = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
    per_class: dict[int, float | None] = {}
    for k, c in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(c)] = float(p.mean()) if p.size else None
    return stats, per_class, ev


def coco_matches(gt: Dataset, preds: pd.DataFrame, iou_threshold: float, ev: Any = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCO's own matches at ``iou_threshold`` (area "all", maxDets 100), by row position.

    Returns (gt_match: for each ground-truth row the matched prediction row or -1; pred_match: for each
    prediction row the matched ground-truth row (for an ignored one, its crowd region's) or -1; pred_ignored:
    matched to a crowd region, neither TP nor FP; pred_capped: beyond the 100 best of its class on its frame, not counted by COCO).
    ``ev``, a finished pycocotools COCOeval on the same inputs, is reused when it holds this threshold.
    """
    gt_match = np.full(len(gt.annotations), -1, dtype=np.int64)
    pred_match = np.full(len(preds), -1, dtype=np.int64)
    ignored = np.zeros(len(preds), dtype=bool)
    capped = np.ones(len(preds), dtype=bool)  # cleared for every prediction COCO looked at
    if not len(preds):
        return gt_match, pred_match, ignored, np.zeros(0, dtype=bool)
    thr = getattr(getattr(ev, "params", None), "iouThrs", None)
    if ev is None or not getattr(ev, "evalImgs", None) or thr is None or not (thr == iou_threshold).any() \
            or list(ev.params.maxDets)[-1] != MAX_DETS:
        ev = _run(gt, preds, "pycocotools", summarize=False,
                  params={"iouThrs": np.array([iou_threshold]), "areaRng": [[0, 1e10]], "areaRngLbl": ["all"],
                          "maxDets": [MAX_DETS]})
    t = int(np.argmax(ev.params.iouThrs == iou_threshold))
    everything = list(ev.params.areaRng[0])
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != everything:
            continue
        dt_rows = np.asarray(e["dtIds"], dtype=np.int64) - 1
        capped[dt_rows] = False
        m = np.asarray(e["dtMatches"][t], dtype=np.int64) - 1
        pred_match[dt_rows] = m
        ignored[dt_rows] = np.asarray(e["dtIgnore"][t], dtype=bool)  # in a crowd region (or outside the area range)
        g = np.asarray(e["gtMatches"][t], dtype=np.int64) - 1
        gt_rows = np.asarray(e["gtIds"], dtype=np.int64) - 1
        gt_match[gt_rows] = np.where(np.asarray(e["gtIgnore"], dtype=bool), -1, g)
    return gt_match, pred_match, ignored, capped
