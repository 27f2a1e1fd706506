"""Detection evaluation: COCOeval (bbox; pycocotools, or faster-coco-eval with ``backend=``) with all 12
stats named, per-class AP, a precision-recall plot, a confusion matrix (classes + background) and
per-object TP/FP/FN flags.

No torch here: predictions come as a DataFrame (annotations-shaped, with ``score``), a COCO
results list, or a Dataset of predictions.

The flags are COCOeval's own matches (:mod:`qualmet.cocoeval`): same class, greedy by descending
score, each prediction taking the unmatched box it overlaps most at IoU >= 0.5, at most 100
predictions per frame and class, so flags and AP never disagree. Because the order is by score, the
matching at any score threshold is a prefix of the full one: a ground-truth box counts as found at
threshold t iff ``matched_score >= t``, a prediction is a TP at t iff ``tp and score >= t``. As in
COCOeval, a prediction that finds no box but lies in a crowd region (``iscrowd=1``) of its class is
*ignored* (neither TP nor FP), and crowd regions are never missed. The confusion matrix then pairs
the leftovers across classes.

Predictions on an image or of a category the ground truth does not have are refused
(:class:`QualmetError`): pycocotools would silently drop them, and the flags would mis-bin them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_json, write_text
from .boxes import iou_matrix, xywh_to_xyxy
from .cocoeval import BACKENDS, COCO_STATS, check_backend, coco_eval, coco_matches  # noqa: F401 (re-exported)
from .dataset import Dataset, category_labels, empty_annotations
from .errors import QualmetError
from .predictions import check_predictions as _check

BACKGROUND = "background"


def check_iou_threshold(iou_threshold: float) -> None:
    """Refuse an IoU threshold outside (0, 1]: at 0 any box, even of another class, would match."""
    if not 0 < iou_threshold <= 1:  # also refuses NaN
        raise QualmetError(f"the IoU threshold must be in (0, 1], got {iou_threshold}")


def check_predictions(gt: Dataset, preds: pd.DataFrame) -> None:
    """Refuse predictions on images ``gt`` does not have or of categories it does not define (the check
    every loader uses, :func:`qualmet.predictions.check_predictions`): COCOeval would silently ignore
    them and the flags would mis-count them. Boxes outside their frame are warned about when loading."""
    where = gt.source if gt.source and gt.source != "<memory>" else "the ground truth"
    _check(preds, gt.images, gt.categories, where=where, warn_outside=False)


def class_labels(categories: pd.DataFrame) -> dict[int, str]:
    """Category id -> label for tables and plots: the name, or ``"name (id 3)"`` where several categories
    share a name (or one is called ``background``), so that no class hides another."""
    return category_labels(categories, reserved=(BACKGROUND,))


def predictions_frame(preds: pd.DataFrame | list | Dataset | None) -> pd.DataFrame:
    """Normalise predictions to an annotations-shaped DataFrame with ``score`` and unique ids."""
    if preds is None:
        return empty_annotations(with_score=True)
    if isinstance(preds, Dataset):
        df = preds.annotations.copy()
    elif isinstance(preds, pd.DataFrame):
        df = preds.copy()
    else:
        recs = list(preds)
        if not recs:
            return empty_annotations(with_score=True)
        df = pd.DataFrame([{"image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
                            "x": float(r["bbox"][0]), "y": float(r["bbox"][1]), "w": float(r["bbox"][2]),
                            "h": float(r["bbox"][3]), "score": float(r["score"])} for r in recs])
    if not len(df):
        return empty_annotations(with_score=True)
    if "score" not in df:
        raise ValueError("predictions need a 'score' column")
    df = df.reset_index(drop=True)
    if "id" not in df or df["id"].duplicated().any():
        df["id"] = np.arange(1, len(df) + 1)
    df["area"] = df["w"] * df["h"]
    df["iscrowd"] = 0
    return df


def match(gt: Dataset, preds: pd.DataFrame, iou_threshold: float = 0.5, ev: Any = None
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-object flags from COCOeval's own matches (:func:`qualmet.cocoeval.coco_matches`): same-class,
    greedy by descending score, at ``iou_threshold``, area "all", at most 100 predictions per frame and class.

    Returns (gt flags: annotation id, image_id, category_id, matched_pred_id, matched_score, iou;
    pred flags: pred id, image_id, category_id, score, tp, ignored, capped, matched_gt_id, iou). Crowd
    regions (``iscrowd``) get no gt row: they are never missed. A prediction COCO does not count is
    ``ignored``, neither TP nor FP: inside a crowd region of its class (``matched_gt_id``/``iou`` name that
    region and the share of the prediction inside it), or ``capped``: beyond the 100 best-scoring of its
    class on its frame. ``iou`` of any other prediction is its best IoU with a box of any class.
    ``ev``: a finished pycocotools COCOeval on the same inputs, reused when it holds ``iou_threshold``.
    """
    check_iou_threshold(iou_threshold)
    check_predictions(gt, preds)
    anns, preds = gt.annotations.reset_index(drop=True), preds.reset_index(drop=True)
    gt_match, pred_match, ignored, capped = coco_matches(gt, preds, iou_threshold, ev)
    crowd = anns["iscrowd"].to_numpy() != 0
    p_box, g_box = preds[["x", "y", "w", "h"]].to_numpy(float), anns[["x", "y", "w", "h"]].to_numpy(float)
    p_iou = _best_iou(preds, anns[~crowd], p_box)
    k = np.where(pred_match >= 0)[0]  # a match's own overlap (with a crowd region: the share inside it)
    p_iou[k] = _pair_overlap(p_box[k], g_box[pred_match[k]], crowd[pred_match[k]])
    pdf = pd.DataFrame({"pred_id": preds["id"].to_numpy(np.int64), "image_id": preds["image_id"].to_numpy(np.int64),
                        "category_id": preds["category_id"].to_numpy(np.int64), "score": preds["score"].to_numpy(float),
                        "tp": (pred_match >= 0) & ~ignored, "ignored": ignored | capped, "capped": capped,
                        "matched_gt_id": _take(anns["id"].to_numpy(np.int64), pred_match, -1), "iou": p_iou})
    rows = np.where(~crowd)[0]
    rows = rows[np.argsort(_image_order(gt, anns["image_id"].to_numpy()[rows]), kind="stable")]
    m = gt_match[rows]
    pair = np.full(len(rows), np.nan)
    i = np.where(m >= 0)[0]
    pair[i] = _pair_overlap(p_box[m[i]], g_box[rows[i]], np.zeros(len(i), dtype=bool))
    gdf = pd.DataFrame({"annotation_id": anns["id"].to_numpy(np.int64)[rows],
                        "image_id": anns["image_id"].to_numpy(np.int64)[rows],
                        "category_id": anns["category_id"].to_numpy(np.int64)[rows],
                        "matched_pred_id": _take(pdf["pred_id"].to_numpy(), m, -1),
                        "matched_score": _take(pdf["score"].to_numpy(), m, np.nan), "iou": pair})
    return gdf, pdf


def _pair_overlap(p: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Row k: the IoU of boxes ``p[k]`` and ``g[k]`` (xywh), or, where ``crowd[k]``, the share of ``p[k]``
    inside ``g[k]`` (COCO's overlap with a crowd region); the same arithmetic as ``iou_matrix``."""
    a, b = xywh_to_xyxy(p), xywh_to_xyxy(g)
    inter = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None) * \
        np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    den = np.where(crowd, area_a, area_a + area_b - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den > 0, inter / den, 0.0), 0.0, 1.0)


def _take(values: np.ndarray, idx: np.ndarray, fill: Any) -> np.ndarray:
    """``values[idx]`` where ``idx >= 0``, ``fill`` elsewhere (also when ``values`` is empty)."""
    out = np.full(len(idx), fill, dtype=values.dtype if np.can_cast(type(fill), values.dtype) else float)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def _best_iou(preds: pd.DataFrame, boxes: pd.DataFrame, p_box: np.ndarray) -> np.ndarray:
    """Each prediction's best IoU with a (non-crowd) box of any class on its frame; 0 on a frame with none."""
    out = np.zeros(len(preds))
    if not len(preds) or not len(boxes):
        return out
    by_img = boxes.groupby("image_id")
    for img, rows in preds.groupby("image_id").indices.items():
        if img in by_img.groups:
            g = by_img.get_group(img)[["x", "y", "w", "h"]].to_numpy(float)
            out[rows] = iou_matrix(p_box[rows], g).max(axis=1)
    return out


def _image_order(gt: Dataset, image_ids: np.ndarray) -> np.ndarray:
    """The position of each image id in ``gt.images`` (the flags list frames in the data set's order)."""
    pos = pd.Series(np.arange(len(gt.images)), index=gt.images["id"].to_numpy())
    return pos.reindex(image_ids).to_numpy()


def confusion_matrix(gt: Dataset, preds: pd.DataFrame, score_threshold: float = 0.5,
                     iou_threshold: float = 0.5) -> pd.DataFrame:
    """Rows = true class, columns = predicted class, plus ``background`` for misses (FN, last
    column) and spurious boxes (FP, last row). Same-class greedy matching first (the diagonal
    equals the TPs of :func:`match` at this threshold), then leftovers are paired across classes.
    Predictions :func:`match` ignores (in a crowd region) are left out; crowd regions are never missed.
    Labels are :func:`class_labels`."""
    check_iou_threshold(iou_threshold)
    check_predictions(gt, preds)
    labels = class_labels(gt.categories)
    names = list(labels.values()) + [BACKGROUND]
    idx = {c: k for k, c in enumerate(labels)}
    bg = len(names) - 1
    cm = np.zeros((len(names), len(names)), dtype=np.int64)
    preds = preds[preds["score"] >= score_threshold] if len(preds) else preds
    gflags, pflags = match(gt, preds, iou_threshold)
    for c in pflags.loc[pflags["tp"], "category_id"]:
        cm[idx[int(c)], idx[int(c)]] += 1
    left_p = (preds[preds["id"].isin(pflags.loc[~pflags["tp"] & ~pflags["ignored"], "pred_id"])] if len(pflags)
              else preds.iloc[0:0])
    left_g = gt.annotations[gt.annotations["id"].isin(gflags.loc[gflags["matched_pred_id"] < 0, "annotation_id"])]
    lp_by = {int(k): v for k, v in left_p.groupby("image_id")}
    for img, g in left_g.groupby("image_id"):
        p = lp_by.pop(int(img), left_p.iloc[0:0]).sort_values("score", ascending=False, kind="mergesort")
        iou = iou_matrix(p[["x", "y", "w", "h"]].to_numpy(), g[["x", "y", "w", "h"]].to_numpy())
        used = np.zeros(len(g), dtype=bool)
        for k in range(len(p)):
            cand = np.where(used, 0.0, iou[k])
            j = int(np.argmax(cand))
            pc = idx[int(p["category_id"].iat[k])]
            if cand[j] >= iou_threshold:
                used[j] = True
                cm[idx[int(g["category_id"].iat[j])], pc] += 1
            else:
                cm[bg, pc] += 1
        for j in np.where(~used)[0]:
            cm[idx[int(g["category_id"].iat[j])], bg] += 1
    for p in lp_by.values():  # leftover predictions on frames with no leftover ground truth
        for c in p["category_id"]:
            cm[bg, idx[int(c)]] += 1
    return pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def evaluate(gt: Dataset, preds: pd.DataFrame | list | Dataset | None, out: str | os.PathLike | None = None,
             score_threshold: float = 0.5, iou_threshold: float = 0.5, verbose: bool = False,
             backend: str = "pycocotools") -> dict[str, Any]:
    """Evaluate predictions against ``gt``: COCO stats, per-class AP, and (with ``out``) the files
    metrics.json, pr_curve.png, confusion_matrix.png/.csv, gt_flags.parquet/.csv, pred_flags.parquet/.csv.

    AP uses every prediction (keep the predictor's threshold low); ``score_threshold`` only sets the
    confusion matrix and the boolean ``found``/``tp_at_threshold`` columns of the flag tables.
    Predictions on images or of categories ``gt`` does not have raise :class:`QualmetError`, as does an
    ``iou_threshold`` outside (0, 1]. Predictions in crowd regions are ignored (see :func:`match`).
    ``backend``: ``"pycocotools"`` or ``"faster-coco-eval"`` (optional package) computes the stats; the
    flags always come from pycocotools' per-image matches (faster-coco-eval keeps none in Python).
    """
    check_iou_threshold(iou_threshold)
    check_backend(backend)
    p = predictions_frame(preds)
    check_predictions(gt, p)
    stats, per_class, ev = coco_eval(gt, p, backend)
    names = class_labels(gt.categories)
    gflags, pflags = match(gt, p, iou_threshold, ev=ev if backend == "pycocotools" else None)
    gflags["found"] = gflags["matched_score"].fillna(-np.inf) >= score_threshold
    pflags["tp_at_threshold"] = pflags["tp"] & (pflags["score"] >= score_threshold)
    cm = confusion_matrix(gt, p, score_threshold, iou_threshold)
    above = pflags["score"] >= score_threshold
    counts = {"tp": int(pflags["tp_at_threshold"].sum()),
              "fp": int((~pflags["tp"] & ~pflags["ignored"] & above).sum()),
              "fn": int((~gflags["found"]).sum())}
    result: dict[str, Any] = {
        "stats": stats,
        "per_class_AP": {names[c]: v for c, v in per_class.items()},
        "counts_at_threshold": counts,
        "ignored_at_threshold": int((pflags["ignored"] & above).sum()),  # not counted by COCO: neither TP nor FP
        "score_threshold": score_threshold, "iou_threshold": iou_threshold, "backend": backend,
        "n_images": int(len(gt.images)), "n_gt": int(len(gt.annotations)), "n_predictions": int(len(p)),
    }
    if verbose:
        print(format_table(result))
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        write_json(o / "metrics.json", result, indent=2)
        write_text(o / "metrics.txt", format_table(result) + "\n")
        write_text(o / "confusion_matrix.csv", cm.to_csv())
        for name, df in (("gt_flags", gflags), ("pred_flags", pflags)):
            write_text(o / f"{name}.csv", df.to_csv(index=False))
            with atomic_path(o / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        from .plots import confusion_png, pr_curves_png

        confusion_png(cm, o / "confusion_matrix.png")
        pr_curves_png(ev, names, o / "pr_curve.png")
    result["gt_flags"], result["pred_flags"], result["confusion_matrix"] = gflags, pflags, cm
    return result


def format_table(result: dict[str, Any]) -> str:
    """The 12 COCO stats and per-class AP as an aligned text table (``n/a`` where COCO gives none)."""
    lines = [f"{'stat':<8} {'value':>7}"]
    for k, v in result["stats"].items():
        lines.append(f"{k:<8} {('n/a' if v is None else f'{v:.4f}'):>7}")
    lines.append("")
    w = max([20] + [len(k) for k in result["per_class_AP"]])  # never cut a name: "x (id 3)" must stay whole
    lines.append(f"{'class':<{w}} {'AP':>7}")
    for k, v in result["per_class_AP"].items():
        lines.append(f"{k:<{w}} {('n/a' if v is None else f'{v:.4f}'):>7}")
    c = result["counts_at_threshold"]
    ignored = result.get("ignored_at_threshold") or 0
    lines.append(f"\nat score >= {result['score_threshold']}, IoU >= {result['iou_threshold']}: "
                 f"TP {c['tp']}  FP {c['fp']}  FN {c['fn']}"
                 + (f"  ({ignored} ignored, as COCO does: in crowd regions or beyond 100 per frame and class)"
                    if ignored else ""))
    return "\n".join(lines)
