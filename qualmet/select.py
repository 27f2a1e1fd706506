"""Subset selection strategies: pure functions from a metrics run, a strategy, a budget and a seed
to the training image ids (plus, per frame, why it was kept or dropped).

Common random numbers: a seed fixes one permutation of the frames (:func:`permutation`). The random
arm takes its first ``budget`` frames; every other sampling strategy walks the same permutation,
skipping the frames it drops, until its budget is met. So an arm and random share most frames, an
arm that drops nothing selects exactly random's frames, and a paired comparison over seeds compares
like with like. ``match = "boxes"`` walks on until the subset holds as many boxes as random's frames
for that seed (the last frame may overshoot by its own boxes), so a filter that drops crowded frames
is not also a "fewer boxes" arm.

Suspicion comes from the run (:meth:`MetricRun.suspicion`): higher always means "more likely a label
error". A frame's score combines its boxes' suspicion by ``frame_score`` ("max": the worst box;
"mean"; "sum": about the expected wrong boxes when suspicion is calibrated). NaN (a metric not
defined for a frame, e.g. a frame without boxes) is neutral: a filter never drops it, a ranking puts
it at the median, and stratify samples NaN frames in proportion to their number.

``review`` ranks frames by the review queue (:func:`qualmet.review.frame_ranking`): fewest issues
first, then the lowest worst-box combined score, ties in permutation order; the caller builds the
queue's frames table and passes it as ``review_frames``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import QualmetError
from .metric_run import MetricRun, fences, orient

RELABEL_REASON = "random sample; to relabel (most suspicious)"
# anchors: need the noise manifest (what is really wrong), so only experiments with [noise] run them
ANCHORS = ("clean", "oracle_remove", "oracle_filter")
# random's frames plus the confident out-of-fold predictions no label overlaps, as ignore regions or as
# boxes (qualmet.experiment.arms): they need the experiment's out-of-fold predictions, so specs only
PREDICTED = ("ignore_predicted", "pseudo_label")
# random's frames, their suspicious boxes deleted or made ignore regions (a right box flagged by mistake
# then does not teach the detector that its object is background)
PER_BOX = ("remove_annotations", "ignore_annotations")
STRATEGIES = ("random", "filter", "rank", "stratify", "combined", "relabel", "review") + PER_BOX + ANCHORS + PREDICTED
# strategies an experiment hands its out-of-fold predictions (review: the queue's missing boxes, wrong classes)
USES_PREDICTIONS = PREDICTED + ("review",)
RANDOM_FRAMES = ("random", "relabel", "clean", "oracle_remove") + PER_BOX + PREDICTED  # random's frames
MATCH = ("frames", "boxes")
FRAME_SCORES = ("max", "mean", "sum")


@dataclass(frozen=True)
class Strategy:
    """What to select. ``kind`` is one of STRATEGIES; the other fields apply to some kinds only."""

    kind: str = "random"
    metric: str | None = None  # filter, rank, stratify, remove/ignore_annotations, relabel
    metrics: tuple[str, ...] = ()  # combined (and relabel, review when given)
    method: str = "iqr"  # filter / remove/ignore_annotations: "iqr", "percentile" or "threshold"
    iqr_k: float = 1.5  # IQR fence multiplier (1.5 or 3 are the usual)
    percentile: float = 10.0  # share (%) of the most suspicious dropped by method="percentile"
    threshold: float | None = None  # metric value beyond which (on the worse side) an object is dropped
    bins: int = 4  # stratify
    k: int | None = None  # relabel: frames to relabel (default: a quarter of the budget)
    match: str = "frames"  # "frames": the budget's frame count; "boxes": random's box count for the seed
    frame_score: str = "max"  # how an object metric scores a frame: "max", "mean" or "sum"
    score: float = 0.5  # ignore_predicted / pseudo_label: the least score of a prediction to add
    iou: float = 0.5  # ignore_predicted / pseudo_label: added when its IoU with every label is below this

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Strategy":
        d = dict(d)
        kind = d.pop("strategy", d.pop("kind", "random"))
        if kind not in STRATEGIES:
            raise QualmetError(f"unknown strategy {kind!r}; choose one of {', '.join(STRATEGIES)}")
        known = set(cls.__dataclass_fields__)
        arm_only = {"name", "oracle", "budget", "verified", "learn_from"}  # an experiment arm's own fields
        extra = set(d) - known - arm_only
        if extra:
            raise QualmetError(f"strategy {kind!r}: unknown field(s) {', '.join(sorted(extra))}")
        if "metrics" in d:
            d["metrics"] = tuple(d["metrics"])
        for k in arm_only:
            d.pop(k, None)
        s = cls(kind=kind, **d)
        s._check()
        return s

    def _check(self) -> None:
        kind = self.kind
        if kind in ("filter", "rank", "stratify") + PER_BOX and not self.metric:
            raise QualmetError(f"strategy {kind!r} needs a 'metric'")
        if kind == "combined" and len(self.metrics) < 2:
            raise QualmetError("strategy 'combined' needs 'metrics', a list of at least two")
        if self.method not in ("iqr", "percentile", "threshold"):
            raise QualmetError(f"unknown filter method {self.method!r}; choose iqr, percentile or threshold")
        if self.method == "threshold" and self.threshold is None and kind in ("filter",) + PER_BOX:
            raise QualmetError("method 'threshold' needs a 'threshold' value")
        if not 0 < self.percentile <= 100:
            raise QualmetError(f"percentile must be in (0, 100], got {self.percentile:g}")
        if self.bins < 1:
            raise QualmetError(f"bins must be at least 1, got {self.bins}")
        if self.k is not None and self.k < 1:
            raise QualmetError(f"k (frames to relabel) must be at least 1, got {self.k}")
        if self.iqr_k < 0:
            raise QualmetError(f"iqr_k must not be negative, got {self.iqr_k:g}")
        if self.match not in MATCH:
            raise QualmetError(f"match must be 'frames' or 'boxes', got {self.match!r}")
        if not 0 <= self.score <= 1:
            raise QualmetError(f"score must be in [0, 1], got {self.score:g}")
        if not 0 < self.iou <= 1:
            raise QualmetError(f"iou must be in (0, 1], got {self.iou:g}")
        if self.frame_score not in FRAME_SCORES:
            raise QualmetError(f"frame_score must be max, mean or sum, got {self.frame_score!r}")


@dataclass
class Selection:
    """The chosen frames, why each frame was kept or dropped, and annotations to remove or mark."""

    image_ids: list[int]
    reasons: pd.DataFrame  # image_id, kept, reason, suspicion
    drop_annotations: list[int] = field(default_factory=list)  # remove_annotations
    ignore_annotations: list[int] = field(default_factory=list)  # ignore_annotations: become iscrowd=1
    relabel_annotations: list[int] = field(default_factory=list)  # relabel: suspicious boxes to check
    relabel_images: list[int] = field(default_factory=list)  # relabel: the frames those boxes are in
    target_boxes: int | None = None  # match="boxes": random's box count this subset was matched to

    def apply(self, ds: Any) -> Any:
        """The training data this selection stands for: ``ds`` on the chosen frames, without the
        dropped annotations and with the ignored ones turned into ignore regions (``iscrowd = 1``)."""
        sub = ds.subset(self.image_ids)
        anns = sub.annotations
        if self.drop_annotations:
            anns = anns[~anns["id"].isin(self.drop_annotations)].reset_index(drop=True)
        if self.ignore_annotations:
            anns = anns.copy()
            anns.loc[anns["id"].isin(self.ignore_annotations), "iscrowd"] = 1
        sub.annotations = anns
        return sub


def check_budget(budget: Any) -> None:
    """A budget is a number of frames (int >= 1) or a fraction of the frames (0 < float <= 1)."""
    is_count = isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget >= 1
    if not (is_count or (isinstance(budget, float) and 0 < budget <= 1)):
        raise QualmetError(f"budget must be a frame count >= 1 or a fraction in (0, 1], got {budget!r}")


def resolve_budget(n_frames: int, budget: float | int) -> int:
    """The number of frames ``budget`` (see :func:`check_budget`) stands for among ``n_frames``."""
    check_budget(budget)
    if isinstance(budget, float):
        return max(1, int(round(n_frames * budget)))
    if budget > n_frames:
        raise QualmetError(f"budget of {budget} frames exceeds the {n_frames} frames available")
    return int(budget)


def permutation(image_ids: Iterable[int], seed: int) -> np.ndarray:
    """The seed's walk order over the frames: their sorted ids, permuted by ``seed``."""
    ids = np.sort(np.asarray([int(i) for i in image_ids], dtype=np.int64))
    return np.random.default_rng(seed).permutation(ids)


def box_counts(run: MetricRun, image_ids: Iterable[int]) -> pd.Series:
    """Boxes per frame (the run's objects table), indexed by ``image_ids``; 0 for a frame without any."""
    idx = pd.Index([int(i) for i in image_ids], dtype="int64")
    counts = run.objects.groupby(run.objects["image_id"].astype("int64")).size()
    return counts.reindex(idx, fill_value=0).astype("int64")


def neutral(susp: pd.Series) -> pd.Series:
    """NaN suspicion replaced by the median of the others: not defined here is neither clean nor suspicious."""
    finite = susp.dropna()
    return susp.fillna(float(finite.median()) if len(finite) else 0.0)


def _flag_suspicion(susp: pd.Series, s: Strategy, worse: str) -> pd.Series:
    """True where ``s.method`` calls a suspicion value suspicious, judged among ``susp``'s finite values."""
    finite = susp.dropna()
    if s.method == "threshold":
        flag = susp > orient(pd.Series([s.threshold]), worse).iloc[0]
    elif s.method == "percentile":
        flag = susp >= (np.percentile(finite, 100 - s.percentile) if len(finite) else np.inf)
    else:
        f = fences(finite.to_numpy(), s.iqr_k)  # suspicion's upper fence is the metric's fence on its worse side
        flag = susp > f[1] if f is not None else pd.Series(False, index=susp.index)
    return flag.fillna(False).astype(bool)


def object_flags(run: MetricRun, metric: str, s: Strategy, rows: pd.Index | None = None) -> pd.Series:
    """True for the objects (or frames) that ``s.method`` calls suspicious on the side ``metric``'s
    ``worse`` names, judged among the rows ``rows`` of its table (all when None): the percentile cut
    and the IQR fences are those of these rows."""
    if s.method == "iqr":
        return run.beyond_fence(metric, s.iqr_k, rows).fillna(False).astype(bool)
    susp = run.suspicion(metric)
    return _flag_suspicion(susp if rows is None else susp.loc[rows], s, run.spec(metric).worse)


def flagged_frames(run: MetricRun, metric: str, s: Strategy, ids: pd.Index) -> set[int]:
    """Frames a filter drops: with frame_score "max" (or a frame-level metric) those holding a flagged
    object (frame); with "mean" or "sum", those whose frame score the method flags among all frames'."""
    if run.level(metric) == "frame" or s.frame_score == "max":
        flags = object_flags(run, metric, s)
        return set(run.table(metric).loc[flags, "image_id"].astype(int))
    score = run.frame_suspicion(metric, ids, how=s.frame_score)
    if s.method == "threshold" and s.frame_score == "sum":
        raise QualmetError(f"filter on {metric!r}: method 'threshold' compares one box's value; with "
                           "frame_score 'sum' use 'percentile' or 'iqr'")
    return set(score.index[_flag_suspicion(score, s, run.spec(metric).worse)].astype(int))


def _reasons(all_ids: pd.Index, kept: set[int], why_kept: str, why_dropped: pd.Series | str,
             suspicion: pd.Series | None) -> pd.DataFrame:
    df = pd.DataFrame({"image_id": all_ids.astype("int64")})
    df["kept"] = df["image_id"].isin(kept)
    dropped = why_dropped.reindex(all_ids).to_numpy() if isinstance(why_dropped, pd.Series) else why_dropped
    df["reason"] = np.where(df["kept"], why_kept, dropped)
    df["suspicion"] = suspicion.reindex(all_ids).to_numpy() if suspicion is not None else np.nan
    return df


def combined_suspicion(run: MetricRun, metrics: tuple[str, ...], image_ids: pd.Index, how: str = "max") -> pd.Series:
    """Mean over metrics of each frame's suspicion percentile rank; a frame a metric leaves NaN counts
    as the middle rank (0.5) for that metric."""
    ranks = [run.frame_suspicion(m, image_ids, how=how).rank(pct=True, method="average").fillna(0.5) for m in metrics]
    return pd.concat(ranks, axis=1).mean(axis=1)


def _take(order: np.ndarray, n: int, target: int | None, boxes: pd.Series | None, why: str) -> np.ndarray:
    """The first ``n`` frames of ``order``, or (``target`` given) the shortest prefix holding at least
    ``target`` boxes: within one frame of the target."""
    if target is None:
        if len(order) < n:
            raise QualmetError(f"{why}; only {len(order)} remain for a budget of {n}: loosen the filter "
                               "(e.g. iqr_k, percentile) or lower the budget")
        return order[:n]
    cum = np.cumsum(boxes.reindex(order).to_numpy())
    k = int(np.searchsorted(cum, target, side="left")) + 1
    if k > len(order):
        raise QualmetError(f"{why}; the {len(order)} frames left hold {int(cum[-1]) if len(cum) else 0} boxes, "
                           f"fewer than random's {target}: loosen the filter or lower the budget")
    return order[:k]


def select(run: MetricRun, image_ids, strategy: Strategy, budget: float | int, seed: int,
           error_frames: Iterable[int] | None = None, review_frames: pd.DataFrame | None = None) -> Selection:
    """Choose ``budget`` frames of ``image_ids`` by ``strategy`` (or raise saying why not), reading each
    metric's suspicion from ``run``. ``error_frames`` (the frames with an injected error, from a noise
    manifest) is needed by ``oracle_filter`` only; ``review_frames`` (the review queue's frames table)
    by ``review`` only."""
    ids = pd.Index(sorted(int(i) for i in image_ids), dtype="int64")
    if len(ids) == 0:
        raise QualmetError("the data set has no frames to select from")
    s = strategy
    for m in dict.fromkeys(((s.metric,) if s.metric else ()) + tuple(s.metrics or ())):
        run.spec(m)  # raises naming the metrics the run has
    n = resolve_budget(len(ids), budget)
    perm = permutation(ids, seed)
    random_ids = np.sort(perm[:n])
    if s.kind in RANDOM_FRAMES:
        return _on_random_frames(run, ids, s, random_ids, n)
    boxes = box_counts(run, ids) if s.match == "boxes" else None
    target = int(boxes.loc[random_ids].sum()) if boxes is not None else None
    if s.kind in ("rank", "stratify"):
        return _ordered(run, ids, s, perm, n, target, boxes)
    if s.kind == "review":
        return _by_review(review_frames, ids, perm, n, target, boxes)
    m = s.metric
    if s.kind == "combined":
        susp = combined_suspicion(run, s.metrics, ids, how=s.frame_score)
        dropped = set(susp.index[susp >= np.percentile(susp, 100 - s.percentile)].astype(int))
        why = f"combined rank of {'+'.join(s.metrics)} in top {s.percentile:g}%"
    elif s.kind == "oracle_filter":
        if error_frames is None:
            raise QualmetError("strategy 'oracle_filter' needs the frames with injected errors (a noise manifest)")
        dropped, susp, why = {int(i) for i in error_frames}, None, "has an injected label error"
    else:  # filter
        susp = run.frame_suspicion(m, ids, how=s.frame_score)
        dropped = flagged_frames(run, m, s, ids)
        why = f"{m} suspicious ({_method_label(s)})"
    order = perm[~np.isin(perm, list(dropped))]
    chosen = np.sort(_take(order, n, target, boxes, f"{s.kind} drops {len(ids) - len(order)} of {len(ids)} frames ({why})"))
    dropped_reason = pd.Series(np.where(ids.isin(list(dropped)), f"dropped: {why}", "not sampled"), index=ids)
    reasons = _reasons(ids, set(chosen.tolist()), "passed filter; sampled", dropped_reason, susp)
    return Selection(chosen.tolist(), reasons, target_boxes=target)


def _on_random_frames(run: MetricRun, ids: pd.Index, s: Strategy, chosen: np.ndarray, n: int) -> Selection:
    """random, clean, oracle_remove, remove/ignore_annotations, relabel, ignore_predicted, pseudo_label: random's
    frames, and what each marks in them (the predicted strategies add their boxes when the subset is built)."""
    sel = Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), "random sample", "not sampled", None))
    if s.kind in PER_BOX:
        m = s.metric
        if run.level(m) != "object":
            raise QualmetError(f"{s.kind} needs an object-level metric; {m!r} is frame-level")
        objs = run.objects[run.objects["image_id"].isin(chosen)]
        flags = object_flags(run, m, s, objs.index)
        flagged = sorted(int(a) for a in objs.loc[flags, "annotation_id"])
        setattr(sel, "drop_annotations" if s.kind == "remove_annotations" else "ignore_annotations", flagged)
    if s.kind == "relabel":
        k = s.k if s.k is not None else max(1, n // 4)
        metrics = s.metrics or ((s.metric,) if s.metric else ())
        if not metrics:
            raise QualmetError("relabel needs 'metric' or 'metrics' to rank frames by suspicion")
        susp = (combined_suspicion(run, metrics, pd.Index(chosen), how=s.frame_score) if len(metrics) > 1
                else neutral(run.frame_suspicion(metrics[0], chosen, how=s.frame_score)))
        top = susp.sort_values(ascending=False, kind="mergesort").index[:k]
        sel.reasons = _reasons(ids, set(chosen.tolist()), "random sample", "not sampled", susp)
        sel.reasons.loc[sel.reasons.image_id.isin(top), "reason"] = RELABEL_REASON
        sel.relabel_images = sorted(int(i) for i in top)
        sel.relabel_annotations = _suspicious_boxes(run, top, metrics)
    return sel


def _ordered(run: MetricRun, ids: pd.Index, s: Strategy, perm: np.ndarray, n: int, target: int | None,
             boxes: pd.Series | None) -> Selection:
    """rank (least suspicious first, ties in permutation order) and stratify (bins interleaved in
    proportion to their share of the budget, each walked in permutation order)."""
    m = s.metric
    susp = run.frame_suspicion(m, ids, how=s.frame_score)
    if s.kind == "rank":
        order = perm[np.argsort(neutral(susp).reindex(perm).to_numpy(), kind="stable")]
        chosen = np.sort(_take(order, n, target, boxes, f"rank by {m}"))
        return Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), f"among the {len(chosen)} least "
                                                   f"suspicious by {m}", f"more suspicious by {m}", susp),
                         target_boxes=target)
    codes = stratum_codes(susp, s.bins)
    order = _stratified_order(perm, codes)
    chosen = np.sort(_take(order, n, target, boxes, f"stratify by {m}"))
    r = _reasons(ids, set(chosen.tolist()), f"stratified by {m}", f"not sampled from its {m} bin", susp)
    r["bin"] = codes.reindex(r["image_id"]).to_numpy()
    return Selection(chosen.tolist(), r, target_boxes=target)


def _by_review(frames: pd.DataFrame | None, ids: pd.Index, perm: np.ndarray, n: int, target: int | None,
               boxes: pd.Series | None) -> Selection:
    """Fewest review issues first, then the lowest worst-box score (NaN, a frame without boxes: the
    median), ties in permutation order."""
    if frames is None:
        raise QualmetError("strategy 'review' needs the review queue's frames table "
                           "(qualmet.review.frame_ranking(dataset, run, predictions))")
    f = frames.assign(image_id=frames["image_id"].astype("int64")).drop_duplicates("image_id").set_index("image_id")
    missing = ids.difference(f.index)
    if len(missing):
        raise QualmetError(f"the review queue has no row for {len(missing)} frame(s), e.g. image id {int(missing[0])}: "
                           "build it from the same data set")
    issues = f["issues"].reindex(perm).to_numpy(float)
    worst = f["worst_box_score"].reindex(perm)
    order = perm[np.lexsort((worst.fillna(worst.median()).to_numpy(float), issues))]  # stable: ties keep perm order
    chosen = np.sort(_take(order, n, target, boxes, "review ranking"))
    susp = f["issues"].reindex(ids).astype(float)
    return Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), f"among the {len(chosen)} frames with the "
                                               "fewest review issues", "more review issues", susp), target_boxes=target)


def stratum_codes(susp: pd.Series, bins: int) -> pd.Series:
    """Quantile bin (0 = least suspicious) of each frame's score; -1 for NaN (no score)."""
    codes = pd.Series(-1, index=susp.index, dtype="int64")
    finite = susp.notna()
    if finite.sum():
        q = min(bins, int(finite.sum()))
        codes[finite] = pd.qcut(susp[finite].rank(method="first"), q=q, labels=False).astype("int64")
    return codes


def _stratified_order(perm: np.ndarray, codes: pd.Series) -> np.ndarray:
    """Each bin of scored frames gets an equal share of the budget, the NaN frames their share of all
    frames. The k-th frame (in permutation order) of a stratum with share w comes at (k + 1/2) / w,
    so any prefix holds each stratum in proportion to its share; an exhausted stratum leaves the rest
    to the others."""
    c = codes.reindex(perm).to_numpy()
    nan_share = float((c == -1).mean())
    n_bins = len(set(c[c >= 0].tolist()))
    share = {-1: nan_share, **{b: (1 - nan_share) / max(n_bins, 1) for b in set(c[c >= 0].tolist())}}
    key = np.empty(len(perm))
    for b, w in share.items():
        where = np.flatnonzero(c == b)
        key[where] = (np.arange(len(where)) + 0.5) / w
    return perm[np.argsort(key, kind="stable")]


def _method_label(s: Strategy) -> str:
    score = "" if s.frame_score == "max" else f", frame {s.frame_score}"
    return {"iqr": f"outside the {s.iqr_k:g}x IQR fence", "percentile": f"top {s.percentile:g}%",
            "threshold": f"beyond {s.threshold}"}[s.method] + score


def _suspicious_boxes(run: MetricRun, frames_ids, metrics) -> list[int]:
    """In each frame to relabel, the object that is worst under any of the metrics."""
    in_frames = run.objects["image_id"].isin(list(frames_ids))
    out: set[int] = set()
    for m in metrics:
        if run.level(m) == "object":
            s = run.suspicion(m)[in_frames].dropna()  # a frame whose boxes are all NaN here has no worst box
            if len(s):
                idx = s.groupby(run.objects.loc[s.index, "image_id"]).idxmax()
                out.update(int(run.objects.loc[i, "annotation_id"]) for i in idx)
    return sorted(out)
