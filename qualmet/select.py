"""Subset selection strategies: pure functions from metric tables, a strategy, a budget and a seed
to the training image ids (plus, per frame, why it was kept or dropped).

Suspicion comes from the run (:meth:`MetricRun.suspicion`): higher always means "more likely a
label error"; NaN (metric not defined here) is never suspicious. A frame is as suspicious as its
worst object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .errors import QualmetError
from .metric_run import MetricRun, orient

RELABEL_REASON = "random sample; to relabel (most suspicious)"
STRATEGIES = ("random", "filter", "rank", "stratify", "combined", "remove_annotations", "relabel")


@dataclass(frozen=True)
class Strategy:
    """What to select. ``kind`` is one of STRATEGIES; the other fields apply to some kinds only."""

    kind: str = "random"
    metric: str | None = None  # filter, rank, stratify, remove_annotations, relabel
    metrics: tuple[str, ...] = ()  # combined (and relabel when given)
    method: str = "iqr"  # filter / remove_annotations: "iqr", "percentile" or "threshold"
    iqr_k: float = 1.5  # IQR fence multiplier (1.5 or 3 are the usual)
    percentile: float = 10.0  # share (%) of the most suspicious dropped by method="percentile"
    threshold: float | None = None  # metric value beyond which (on the worse side) an object is dropped
    bins: int = 4  # stratify
    k: int | None = None  # relabel: frames to relabel (default: a quarter of the budget)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Strategy":
        d = dict(d)
        kind = d.pop("strategy", d.pop("kind", "random"))
        if kind not in STRATEGIES:
            raise QualmetError(f"unknown strategy {kind!r}; choose one of {', '.join(STRATEGIES)}")
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known - {"name", "oracle"}
        if extra:
            raise QualmetError(f"strategy {kind!r}: unknown field(s) {', '.join(sorted(extra))}")
        if "metrics" in d:
            d["metrics"] = tuple(d["metrics"])
        d.pop("name", None)
        d.pop("oracle", None)
        s = cls(kind=kind, **d)
        if kind in ("filter", "rank", "stratify", "remove_annotations") and not s.metric:
            raise QualmetError(f"strategy {kind!r} needs a 'metric'")
        if kind == "combined" and len(s.metrics) < 2:
            raise QualmetError("strategy 'combined' needs 'metrics', a list of at least two")
        if s.method not in ("iqr", "percentile", "threshold"):
            raise QualmetError(f"unknown filter method {s.method!r}; choose iqr, percentile or threshold")
        if s.method == "threshold" and s.threshold is None and kind in ("filter", "remove_annotations"):
            raise QualmetError("method 'threshold' needs a 'threshold' value")
        if not 0 < s.percentile <= 100:
            raise QualmetError(f"percentile must be in (0, 100], got {s.percentile:g}")
        if s.bins < 1:
            raise QualmetError(f"bins must be at least 1, got {s.bins}")
        if s.k is not None and s.k < 1:
            raise QualmetError(f"k (frames to relabel) must be at least 1, got {s.k}")
        if s.iqr_k < 0:
            raise QualmetError(f"iqr_k must not be negative, got {s.iqr_k:g}")
        return s


@dataclass
class Selection:
    """The chosen frames, why each frame was kept or dropped, and annotations to remove or mark."""

    image_ids: list[int]
    reasons: pd.DataFrame  # image_id, kept, reason, suspicion
    drop_annotations: list[int] = field(default_factory=list)  # remove_annotations
    relabel_annotations: list[int] = field(default_factory=list)  # relabel: suspicious boxes to check
    relabel_images: list[int] = field(default_factory=list)  # relabel: the frames those boxes are in


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


def object_flags(run: MetricRun, metric: str, s: Strategy, rows: pd.Index | None = None) -> pd.Series:
    """True for the objects (or frames) that ``s.method`` calls suspicious on the side ``metric``'s
    ``worse`` names, judged among the rows ``rows`` of its table (all when None): the percentile cut
    and the IQR fences are those of these rows."""
    susp = run.suspicion(metric)
    if rows is not None:
        susp = susp.loc[rows]
    finite = susp.dropna()
    if s.method == "threshold":
        flag = susp > orient(pd.Series([s.threshold]), run.spec(metric).worse).iloc[0]
    elif s.method == "percentile":
        flag = susp >= (np.percentile(finite, 100 - s.percentile) if len(finite) else np.inf)
    else:
        flag = run.beyond_fence(metric, s.iqr_k, rows)
    return flag.fillna(False).astype(bool)


def _reasons(all_ids: pd.Index, kept: set[int], why_kept: str, why_dropped: pd.Series | str,
             suspicion: pd.Series | None) -> pd.DataFrame:
    df = pd.DataFrame({"image_id": all_ids.astype("int64")})
    df["kept"] = df["image_id"].isin(kept)
    dropped = why_dropped.reindex(all_ids).to_numpy() if isinstance(why_dropped, pd.Series) else why_dropped
    df["reason"] = np.where(df["kept"], why_kept, dropped)
    df["suspicion"] = suspicion.reindex(all_ids).to_numpy() if suspicion is not None else np.nan
    return df


def _sample(ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(np.sort(ids), size=n, replace=False)) if n else np.array([], dtype=np.int64)


def combined_suspicion(run: MetricRun, metrics: tuple[str, ...], image_ids: pd.Index) -> pd.Series:
    """Mean over metrics of each frame's suspicion percentile rank (NaN ranks count as least suspicious)."""
    ranks = [run.frame_suspicion(m, image_ids).rank(pct=True, method="average").fillna(0.0) for m in metrics]
    return pd.concat(ranks, axis=1).mean(axis=1)


def select(run: MetricRun, image_ids, strategy: Strategy, budget: float | int, seed: int) -> Selection:
    """Choose exactly ``budget`` frames of ``image_ids`` by ``strategy`` (or raise saying why not),
    reading each metric's suspicion from ``run``."""
    ids = pd.Index(sorted(int(i) for i in image_ids), dtype="int64")
    if len(ids) == 0:
        raise QualmetError("the data set has no frames to select from")
    for m in dict.fromkeys(((strategy.metric,) if strategy.metric else ()) + tuple(strategy.metrics or ())):
        run.spec(m)  # raises naming the metrics the run has
    n = resolve_budget(len(ids), budget)
    rng = np.random.default_rng(seed)
    s = strategy
    kind = s.kind

    if kind in ("random", "remove_annotations", "relabel"):
        chosen = _sample(ids.to_numpy(), n, rng)
        sel = Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), "random sample", "not sampled", None))
        if kind == "remove_annotations":
            m = s.metric
            if run.level(m) != "object":
                raise QualmetError(f"remove_annotations needs an object-level metric; {m!r} is frame-level")
            objs = run.objects[run.objects["image_id"].isin(chosen)]
            flags = object_flags(run, m, s, objs.index)
            sel.drop_annotations = sorted(int(a) for a in objs.loc[flags, "annotation_id"])
        if kind == "relabel":
            k = s.k if s.k is not None else max(1, n // 4)
            metrics = s.metrics or ((s.metric,) if s.metric else ())
            if not metrics:
                raise QualmetError("relabel needs 'metric' or 'metrics' to rank frames by suspicion")
            susp = (combined_suspicion(run, metrics, pd.Index(chosen)) if len(metrics) > 1
                    else run.frame_suspicion(metrics[0], chosen).fillna(-np.inf))
            top = susp.sort_values(ascending=False, kind="mergesort").index[:k]
            sel.reasons = _reasons(ids, set(chosen.tolist()), "random sample", "not sampled", susp)
            sel.reasons.loc[sel.reasons.image_id.isin(top), "reason"] = RELABEL_REASON
            sel.relabel_images = sorted(int(i) for i in top)
            sel.relabel_annotations = _suspicious_boxes(run, top, metrics)
        return sel

    if kind == "combined":
        susp = combined_suspicion(run, s.metrics, ids)
        label = "combined rank of " + "+".join(s.metrics)
        cut = np.percentile(susp, 100 - s.percentile)
        dropped = susp >= cut
        keep_pool = ids[~dropped.to_numpy()]
        return _fill(ids, keep_pool, n, rng, susp, f"{label} in top {s.percentile:g}%", s, "combined")

    m = s.metric
    susp = run.frame_suspicion(m, ids)
    if kind == "filter":
        flags = object_flags(run, m, s)
        bad_frames = set(run.table(m).loc[flags, "image_id"].astype(int))
        keep_pool = ids[~ids.isin(list(bad_frames))]
        return _fill(ids, keep_pool, n, rng, susp, f"{m} suspicious ({_method_label(s)})", s, "filter")
    if kind == "rank":
        # least suspicious first; equal values (NaN counts as least suspicious) in a seeded random order
        order = np.lexsort((rng.random(len(susp)), susp.fillna(-np.inf).to_numpy()))
        chosen = np.sort(susp.index.to_numpy()[order[:n]])
        return Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), f"among the {n} least suspicious by {m}",
                                                   f"more suspicious by {m}", susp))
    if kind == "stratify":
        return _stratify(ids, susp, n, s.bins, rng, m)
    raise QualmetError(f"unknown strategy {kind!r}")


def _method_label(s: Strategy) -> str:
    return {"iqr": f"outside the {s.iqr_k:g}x IQR fence", "percentile": f"top {s.percentile:g}%",
            "threshold": f"beyond {s.threshold}"}[s.method]


def _fill(ids: pd.Index, pool: pd.Index, n: int, rng: np.random.Generator, susp: pd.Series, why: str,
          s: Strategy, kind: str) -> Selection:
    if len(pool) < n:
        raise QualmetError(f"{kind} drops {len(ids) - len(pool)} of {len(ids)} frames ({why}); only {len(pool)} "
                           f"remain for a budget of {n}: loosen the filter (e.g. iqr_k, percentile) or lower the budget")
    chosen = _sample(pool.to_numpy(), n, rng)
    dropped_reason = pd.Series(np.where(ids.isin(pool), "not sampled", f"dropped: {why}"), index=ids)
    return Selection(chosen.tolist(), _reasons(ids, set(chosen.tolist()), "passed filter; sampled", dropped_reason, susp))


def _stratify(ids: pd.Index, susp: pd.Series, n: int, bins: int, rng: np.random.Generator, m: str) -> Selection:
    """Quantile bins of the metric; an equal share of the budget from each (spill-over to other bins)."""
    v = susp.copy()
    nan_mask = v.isna()
    codes = pd.Series(-1, index=ids)
    if (~nan_mask).sum():
        codes[~nan_mask] = pd.qcut(v[~nan_mask].rank(method="first"), q=min(bins, int((~nan_mask).sum())),
                                   labels=False).astype(int)
    groups = [codes.index[codes == b].to_numpy() for b in sorted(codes.unique())]
    quota = np.full(len(groups), n // len(groups))
    quota[: n % len(groups)] += 1
    sizes = np.array([len(g) for g in groups])
    while (quota > sizes).any():  # give what a small bin cannot take to the bins with room
        spare = int((quota - sizes).clip(min=0).sum())
        quota = np.minimum(quota, sizes)
        room = sizes - quota
        for i in np.argsort(-room):
            take = min(spare, int(room[i]))
            quota[i] += take
            spare -= take
    chosen = np.sort(np.concatenate([_sample(g, int(q), rng) for g, q in zip(groups, quota)]))
    r = _reasons(ids, set(chosen.tolist()), f"stratified by {m}", f"not sampled from its {m} bin", susp)
    r["bin"] = codes.reindex(r["image_id"]).to_numpy()
    return Selection(chosen.tolist(), r)


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
