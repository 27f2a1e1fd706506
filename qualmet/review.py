"""The review queue: the boxes and frames most likely to be wrong, worst first, each with an issue
kind, a score in [0, 1] and the reasons behind it. Pure functions of a data set, its metrics run and
(optionally) out-of-fold predictions; no noise manifest is needed.

Every box gets a combined suspicion (``combined``: the rank mean of its class percentiles, or the
learned combiner's P(wrong) when a verified set is given, :mod:`qualmet.combine`). Issues come from
rules, each documented in ``docs/review.md``:

- ``empty box``: the box has no width or height, or lies wholly outside its image; score 1.
- ``duplicate``: another box of the same class in the frame overlaps it with IoU >= 0.7; the later
  annotation is flagged, score = that IoU.
- ``wrong class``: (predictions) a prediction of another class with IoU >= 0.5 and score >= 0.5
  beats every same-class prediction on the box; score = its score; it suggests that class.
- ``loose/shifted box``: (predictions) no same-class prediction matches the box (IoU >= 0.5) but
  one with score >= 0.5 overlaps it partly (0.3 <= IoU < 0.95): score = its score, and it is the
  suggested box; or, with or without predictions, a box-fit metric (``box_tightness_iou``,
  ``box_tightness``, ``aspect_ratio``) is in the suspicious 5% of the box's class (the suggested
  box, when one exists, is shown too).
- ``spurious box``: a content metric (``confidence``, ``black_white_ratio``,
  ``class_color_consistency``) is in the suspicious 5% of its class; when a box-fit metric is too,
  the kind is the rule whose highest percentile is higher (ties: loose/shifted).
  Both metric rules score a box by its combined suspicion.
- ``missing box``: (predictions) a prediction with score >= 0.5 that overlaps no label (IoU < 0.5)
  and no label of its class even partly (IoU < 0.3: that is a better box for the label); score =
  its score; it is the suggested annotation.
- ``bad image``: an image metric (``brightness``, ``sharpness``, ``contrast``, ``image_entropy``,
  ``colorfulness``) lies beyond its 3x IQR fence on the suspicious side; score = the highest
  percentile of those metrics among the frames.

A box takes the first kind that fires in the order above. A metric is a reason for a box when its
suspicion is in the top 5% of the box's class, and reads "box_tightness_iou 0.21, 2nd percentile of
its class: <the metric's description>".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .boxes import iou_matrix
from .combine import LearnedCombiner, class_percentiles, rank_mean
from .dataset import Dataset
from .metric_run import MetricRun

KINDS = ("empty box", "duplicate", "wrong class", "loose/shifted box", "spurious box", "missing box", "bad image")
FIT_METRICS = ("box_tightness_iou", "box_tightness", "aspect_ratio")
CONTENT_METRICS = ("confidence", "black_white_ratio", "class_color_consistency")
IMAGE_METRICS = ("brightness", "sharpness", "contrast", "image_entropy", "colorfulness")
RULE_METRICS = FIT_METRICS + CONTENT_METRICS + IMAGE_METRICS  # what the metric rules read
TOP = 0.95  # a metric speaks against a box in the suspicious 5% of its class
DUPLICATE_IOU, MATCH_IOU, PRED_SCORE, IMAGE_FENCE_K = 0.7, 0.5, 0.5, 3.0
SUGGEST_IOU = (0.3, 0.95)
COLUMNS = ["rank", "kind", "score", "image_id", "file_name", "annotation_id", "category", "x", "y", "w", "h",
           "suggested_category", "sx", "sy", "sw", "sh", "suggested_score", "reasons"]


@dataclass
class Review:
    """``issues``: the queue (COLUMNS, worst first); ``boxes``: per annotation, its combined score, kind
    (or "") and reasons; ``frames``: per frame, its issue count and worst score; ``notes``: what the
    queue could not look for."""

    issues: pd.DataFrame
    boxes: pd.DataFrame
    frames: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def box_reasons(run: MetricRun, pct: pd.DataFrame) -> pd.Series:
    """Per box: the metrics whose suspicion is in the top 5% of its class, each as one sentence."""
    cls = run.objects["category_id"].to_numpy()
    out = [[] for _ in range(len(run.objects))]
    for m in pct.columns:
        flagged = np.flatnonzero(pct[m].to_numpy() >= TOP)
        if not len(flagged):
            continue
        v = run.values(m)
        vpct = v.groupby(cls).rank(pct=True, method="average").to_numpy()
        desc = run.spec(m).description
        for i in flagged:
            out[i].append(f"{m} {v.iat[i]:.3g}, {_ordinal(max(1, int(round(100 * vpct[i]))))} percentile of its class: {desc}")
    return pd.Series(["; ".join(r) for r in out], index=run.objects.index)


def _rule_score(pct: pd.DataFrame, metrics: tuple[str, ...]) -> np.ndarray:
    cols = [m for m in metrics if m in pct.columns]
    if not cols:
        return np.full(len(pct), np.nan)
    return pct[cols].max(axis=1, skipna=True).to_numpy()


def empty_boxes(objects: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """True for boxes that cover no pixel: zero (or negative) width or height, or wholly outside the
    image they belong to."""
    size = images.set_index("id")[["width", "height"]].reindex(objects["image_id"].to_numpy()).to_numpy(float)
    x, y, w, h = (objects[c].to_numpy(float) for c in ("x", "y", "w", "h"))
    return (w <= 0) | (h <= 0) | (x >= size[:, 0]) | (y >= size[:, 1]) | (x + w <= 0) | (y + h <= 0)


def duplicates(anns: pd.DataFrame) -> pd.DataFrame:
    """Pairs of same-class boxes in one frame with IoU >= DUPLICATE_IOU: the later annotation
    (``annotation_id``) and the earlier one it repeats (``of``), with their IoU."""
    rows = []
    for (_, _), g in anns.groupby(["image_id", "category_id"], sort=False):
        if len(g) < 2:
            continue
        g = g.sort_values("id")
        iou = np.triu(iou_matrix(g[["x", "y", "w", "h"]].to_numpy(float), g[["x", "y", "w", "h"]].to_numpy(float)), 1)
        for j in range(1, len(g)):
            i = int(np.argmax(iou[:, j]))
            if iou[i, j] >= DUPLICATE_IOU:
                rows.append((int(g["id"].iat[j]), int(g["id"].iat[i]), float(iou[i, j])))
    return pd.DataFrame(rows, columns=["annotation_id", "of", "iou"])


def _prediction_evidence(anns: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """Per annotation: the best confident other-class prediction on it (wrong class) and the best
    same-class prediction that overlaps it partly (a suggested box), from out-of-fold predictions."""
    conf = preds[preds["score"] >= PRED_SCORE]
    rows = []
    for iid, g in anns.groupby("image_id", sort=False):
        p = conf[conf["image_id"] == iid]
        if not len(p):
            continue
        iou = iou_matrix(g[["x", "y", "w", "h"]].to_numpy(float), p[["x", "y", "w", "h"]].to_numpy(float))
        same = g["category_id"].to_numpy()[:, None] == p["category_id"].to_numpy()[None, :]
        score = p["score"].to_numpy()
        for i in range(len(g)):
            on = iou[i] >= MATCH_IOU
            best_same = score[on & same[i]].max(initial=0.0)
            other = np.flatnonzero(on & ~same[i] & (score > best_same))
            near = np.flatnonzero(same[i] & (iou[i] >= SUGGEST_IOU[0]) & (iou[i] < SUGGEST_IOU[1]))
            rec = {"annotation_id": int(g["id"].iat[i]), "matched": bool(best_same > 0)}
            if len(other):
                k = other[np.argmax(score[other])]
                rec.update(wrong_class=float(score[k]), other_category=int(p["category_id"].iat[k]), other_row=k)
            if len(near):
                k = near[np.argmax(score[near])]
                rec.update(suggest_score=float(score[k]), suggest=p[["x", "y", "w", "h"]].iloc[k].to_numpy(float))
            rows.append(rec)
    return pd.DataFrame(rows, columns=["annotation_id", "matched", "wrong_class", "other_category", "other_row",
                                       "suggest_score", "suggest"])


def missing_boxes(anns: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """Confident predictions (score >= 0.5) that overlap no label of their frame (IoU < 0.5, any
    class; < 0.3 with a label of their class), one per object: overlapping suggestions keep the
    highest-scoring one."""
    conf = preds[preds["score"] >= PRED_SCORE].sort_values("score", ascending=False, kind="mergesort")
    keep = []
    for iid, p in conf.groupby("image_id", sort=False):
        g = anns[anns["image_id"] == iid]
        pb = p[["x", "y", "w", "h"]].to_numpy(float)
        free = np.ones(len(p), bool)
        if len(g):  # a prediction partly on a label of its class suggests a better box for it instead
            iou = iou_matrix(pb, g[["x", "y", "w", "h"]].to_numpy(float))
            same = p["category_id"].to_numpy()[:, None] == g["category_id"].to_numpy()[None, :]
            free = (iou.max(axis=1) < MATCH_IOU) & (np.where(same, iou, 0.0).max(axis=1) < SUGGEST_IOU[0])
        taken: list[int] = []
        for k in np.flatnonzero(free):
            if taken and iou_matrix(pb[[k]], pb[taken]).max() >= MATCH_IOU:
                continue
            taken.append(int(k))
        keep.append(p.iloc[taken])
    return pd.concat(keep) if keep else conf.iloc[0:0]


def _bad_images(run: MetricRun) -> pd.DataFrame:
    """Frames beyond the 3x IQR fence of an image metric, on its suspicious side."""
    names = [m for m in IMAGE_METRICS if m in run.metrics and run.level(m) == "frame"]
    rows = []
    for m in names:
        beyond = run.beyond_fence(m, IMAGE_FENCE_K).to_numpy()
        pct = run.suspicion(m).rank(pct=True, method="average").to_numpy()
        v = run.values(m).to_numpy()
        for i in np.flatnonzero(beyond):
            rows.append((int(run.frames["image_id"].iat[i]), float(pct[i]),
                         f"{m} {v[i]:.3g}, beyond its 3x IQR fence: {run.spec(m).description}"))
    df = pd.DataFrame(rows, columns=["image_id", "score", "reason"])
    return df.groupby("image_id", as_index=False).agg(score=("score", "max"), reasons=("reason", "; ".join))


def _box_issues(ds: Dataset, run: MetricRun, preds: pd.DataFrame | None, pct: pd.DataFrame, reasons: pd.Series,
                combined: pd.Series) -> pd.DataFrame:
    """One row per flagged box: its kind (the first rule that fires), score and suggestion."""
    o = run.objects.reset_index(drop=True)
    kind = np.full(len(o), "", dtype=object)
    score = np.full(len(o), np.nan)
    sug_cat = np.full(len(o), np.nan)
    sug_box = np.full((len(o), 4), np.nan)
    sug_score = np.full(len(o), np.nan)
    extra = [""] * len(o)
    pos = pd.Series(np.arange(len(o)), index=o["annotation_id"].to_numpy())

    def fire(rows: np.ndarray, k: str, s: np.ndarray) -> None:  # rows not yet given a kind take this one
        free = kind[rows] == ""
        kind[rows[free]], score[rows[free]] = k, s[free]

    empty = empty_boxes(o, ds.images)
    fire(np.flatnonzero(empty), "empty box", np.ones(int(empty.sum())))
    for i in np.flatnonzero(empty):
        extra[i] = "the box covers no pixel of its image (zero width or height, or outside the frame)"
    dup = duplicates(ds.annotations)
    dup = dup[dup["annotation_id"].isin(pos.index)]
    if len(dup):
        r = pos[dup["annotation_id"]].to_numpy()
        fire(r, "duplicate", dup["iou"].to_numpy())
        for i, (of, iou) in zip(r, zip(dup["of"], dup["iou"])):
            extra[i] = f"IoU {iou:.2f} with annotation {of} of the same class"
    ev = _prediction_evidence(ds.annotations, preds) if preds is not None else None
    if ev is not None and len(ev):
        ev = ev[ev["annotation_id"].isin(pos.index)]
        wc = ev[ev["wrong_class"].notna()]
        r = pos[wc["annotation_id"]].to_numpy()
        fire(r, "wrong class", wc["wrong_class"].to_numpy(float))
        sug_cat[r] = wc["other_category"].to_numpy(float)
        sg = ev[ev["suggest_score"].notna()]
        r = pos[sg["annotation_id"]].to_numpy()
        if len(r):
            sug_box[r] = np.stack(sg["suggest"].to_list())
            sug_score[r] = sg["suggest_score"].to_numpy(float)
            unmatched = ~sg["matched"].to_numpy(bool)  # the model sees the object beside the box, not on it
            fire(r[unmatched], "loose/shifted box", sg["suggest_score"].to_numpy(float)[unmatched])
    fit = np.nan_to_num(_rule_score(pct.reset_index(drop=True), FIT_METRICS))
    content = np.nan_to_num(_rule_score(pct.reset_index(drop=True), CONTENT_METRICS))
    for k, rows in (("spurious box", np.flatnonzero((content >= TOP) & (content > fit))),
                    ("loose/shifted box", np.flatnonzero(fit >= TOP)), ("spurious box", np.flatnonzero(content >= TOP))):
        fire(rows, k, combined.to_numpy(float)[rows])
    flagged = np.flatnonzero(kind != "")
    wrong = kind[flagged] == "wrong class"
    out = pd.DataFrame({"kind": kind[flagged], "score": score[flagged], "image_id": o["image_id"].to_numpy()[flagged],
                        "annotation_id": o["annotation_id"].to_numpy()[flagged],
                        "category_id": o["category_id"].to_numpy()[flagged]})
    out[["x", "y", "w", "h"]] = o[["x", "y", "w", "h"]].to_numpy(float)[flagged]
    out["suggested_category"] = np.where(wrong, sug_cat[flagged], np.nan)
    box_ok = kind[flagged] == "loose/shifted box"
    out[["sx", "sy", "sw", "sh"]] = np.where(box_ok[:, None], sug_box[flagged], np.nan)
    out["suggested_score"] = np.where(box_ok, sug_score[flagged], np.nan)
    out["reasons"] = ["; ".join(t for t in (extra[i], reasons.iat[i]) if t) for i in flagged]
    return out


def build_review(ds: Dataset, run: MetricRun, predictions: pd.DataFrame | None = None,
                 verified: pd.Series | None = None) -> Review:
    """The review queue of ``ds`` from its metrics ``run``; ``predictions`` (out-of-fold, COCO
    results as a DataFrame) add missing boxes, wrong classes and suggested boxes; ``verified``
    (annotation id -> True when wrong) switches the combined score to the learned combiner."""
    pct = class_percentiles(run)
    combined = (LearnedCombiner.fit(run, verified).score(run) if verified is not None else rank_mean(run))
    reasons = box_reasons(run, pct)
    notes = []
    box_issues = _box_issues(ds, run, predictions, pct, reasons, combined)
    parts = [box_issues]
    if predictions is None:
        notes.append("no predictions: missing boxes, wrong classes and suggested boxes need out-of-fold predictions "
                     "(make them with `qualmet crossval DATA.json --out oof.json`, then pass --predictions oof.json)")
    else:
        miss = missing_boxes(ds.annotations, predictions)
        parts.append(pd.DataFrame({"kind": "missing box", "score": miss["score"].to_numpy(float),
                                   "image_id": miss["image_id"].to_numpy(), "annotation_id": np.nan,
                                   "category_id": np.nan, "suggested_category": miss["category_id"].to_numpy(float),
                                   "sx": miss["x"].to_numpy(float), "sy": miss["y"].to_numpy(float),
                                   "sw": miss["w"].to_numpy(float), "sh": miss["h"].to_numpy(float),
                                   "suggested_score": miss["score"].to_numpy(float),
                                   "reasons": [f"a prediction with score {s:.2f} overlaps no label (IoU < {MATCH_IOU})"
                                               for s in miss["score"]]}))
    bad = _bad_images(run)
    parts.append(bad.assign(kind="bad image", annotation_id=np.nan, category_id=np.nan))
    issues = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
        pd.DataFrame(columns=[*COLUMNS, "category_id"])  # a queue with no issue at all
    return Review(_ranked(issues, ds), _box_table(run, combined, box_issues, reasons), _frame_table(issues, run, combined),
                  notes)


def frame_ranking(ds: Dataset, run: MetricRun, predictions: pd.DataFrame | None = None,
                  metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The queue's frames table (most issues first, then the worst box's combined score) built from
    ``run`` restricted to ``metrics`` (all of its metrics when None): what the ``review`` selection
    strategy ranks frames by (:func:`qualmet.select.select`)."""
    return build_review(ds, run.only(metrics) if metrics else run, predictions).frames


def _ranked(issues: pd.DataFrame, ds: Dataset) -> pd.DataFrame:
    names = dict(zip(ds.categories["id"].astype(int), ds.categories["name"].astype(str)))
    files = dict(zip(ds.images["id"].astype(int), ds.images["file_name"].astype(str)))
    df = issues.sort_values(["score", "image_id"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    df["file_name"] = df["image_id"].map(lambda i: files.get(int(i), ""))
    df["category"] = df["category_id"].map(lambda c: names.get(int(c), str(int(c))) if pd.notna(c) else "")
    df["suggested_category"] = df["suggested_category"].map(lambda c: names.get(int(c), str(int(c))) if pd.notna(c) else "")
    return df.reindex(columns=COLUMNS)


def _box_table(run: MetricRun, combined: pd.Series, box_issues: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    kinds = dict(zip(box_issues["annotation_id"], box_issues["kind"]))
    return pd.DataFrame({"annotation_id": run.objects["annotation_id"].to_numpy(),
                         "image_id": run.objects["image_id"].to_numpy(), "score": combined.to_numpy(float),
                         "kind": [kinds.get(a, "") for a in run.objects["annotation_id"]], "reasons": reasons.to_numpy()})


def _frame_table(issues: pd.DataFrame, run: MetricRun, combined: pd.Series) -> pd.DataFrame:
    """Per frame: issues by kind, missing boxes suggested, the worst box's combined score; the frames
    with the most likely problems first."""
    worst = combined.groupby(run.objects["image_id"].to_numpy()).max()
    f = pd.DataFrame({"image_id": run.frames["image_id"].astype("int64").to_numpy(),
                      "file_name": run.frames["file_name"].to_numpy()})
    f["worst_box_score"] = f["image_id"].map(worst)
    counts = issues.groupby("image_id").size() if len(issues) else pd.Series(dtype=int)
    f["issues"] = f["image_id"].map(counts).fillna(0).astype(int)
    miss = issues[issues["kind"] == "missing box"].groupby("image_id").size() if len(issues) else pd.Series(dtype=int)
    f["missing_boxes"] = f["image_id"].map(miss).fillna(0).astype(int)
    return f.sort_values(["issues", "worst_box_score"], ascending=False, kind="mergesort").reset_index(drop=True)
