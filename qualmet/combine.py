"""Combining several metrics into one suspicion score per box, in one direction: higher = more likely
a label error. Pure functions of a :class:`~qualmet.metric_run.MetricRun`.

- :func:`class_percentiles`: each object metric's suspicion as a percentile within the box's class,
  ``p = rank(s) / n`` over the boxes of that class with a value (ties share their mean rank), in
  (0, 1]; NaN where the metric is not defined.
- :func:`rank_mean`: the mean of the available percentiles (NaN ones left out; a box with none is NaN).
- :class:`LearnedCombiner`: a logistic model ``P(wrong | x) = 1 / (1 + exp(-(w . x + b)))`` fitted on
  verified boxes, where ``x`` holds each metric's standardised suspicion (``(s - mean) / sd``, NaN
  imputed as 0) and one indicator per metric that is 1 where the value was NaN. It is fitted by L2-
  penalised maximum likelihood (``C`` the inverse penalty), and scores every box of the run.
- :func:`with_learned`: the run plus that probability as an object metric (``learned``, higher = worse).
- :func:`verified_frames`: the seeded frames a verified set is drawn from (experiments, ``qualmet errors``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import QualmetError
from .metric_run import MetricRun


def object_metrics(run: MetricRun, metrics: Iterable[str] | None = None) -> list[str]:
    """The object-level metrics of ``run`` (those named, checked to be object level, when given)."""
    if metrics is None:
        return [m for m in run.metrics if run.level(m) == "object"]
    names = list(metrics)
    frame = [m for m in names if run.level(m) != "object"]
    if frame:
        raise QualmetError(f"metric(s) {', '.join(frame)} are frame level; a box score combines object metrics")
    return names


def class_percentiles(run: MetricRun, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One column per object metric: the box's suspicion percentile among the boxes of its class."""
    cls = run.objects["category_id"].to_numpy()
    out = {m: run.suspicion(m).groupby(cls).rank(pct=True, method="average") for m in object_metrics(run, metrics)}
    return pd.DataFrame(out, index=run.objects.index)


def rank_mean(run: MetricRun, metrics: Iterable[str] | None = None) -> pd.Series:
    """Mean class percentile of suspicion over ``metrics`` (all object metrics by default)."""
    return class_percentiles(run, metrics).mean(axis=1, skipna=True)


def read_verified(path: str | Path, run: MetricRun) -> pd.Series:
    """A CSV of verified boxes, ``annotation_id,verdict`` with verdict ``correct`` or ``wrong``, as a
    boolean Series (True = wrong) indexed by annotation id. Unknown ids or verdicts are an error."""
    p = Path(path)
    try:
        df = pd.read_csv(p, dtype={"verdict": str})
    except Exception as exc:  # pandas raises several types for a bad CSV
        raise QualmetError(f"{p}: cannot read the verified set as CSV ({exc})") from None
    missing = {"annotation_id", "verdict"} - set(df.columns)
    if missing:
        raise QualmetError(f"{p}: needs columns annotation_id,verdict (missing {', '.join(sorted(missing))})")
    verdict = df["verdict"].str.strip().str.lower()
    bad = ~verdict.isin(["correct", "wrong"])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise QualmetError(f"{p}: row {i + 2}: verdict {df['verdict'].iloc[i]!r}; write correct or wrong")
    ids = pd.to_numeric(df["annotation_id"], errors="coerce")
    unknown = ids.isna() | ~ids.isin(run.objects["annotation_id"])
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise QualmetError(f"{p}: row {i + 2}: annotation id {df['annotation_id'].iloc[i]!r} is not a box of the "
                           "metrics run")
    return pd.Series((verdict == "wrong").to_numpy(), index=ids.astype("int64").to_numpy())


@dataclass
class LearnedCombiner:
    """A logistic model over the standardised suspicions of ``metrics`` (see the module docstring)."""

    metrics: list[str]
    mean: np.ndarray
    sd: np.ndarray
    weights: np.ndarray  # one per metric, then one per NaN indicator
    bias: float

    def features(self, run: MetricRun) -> np.ndarray:
        s = np.column_stack([run.suspicion(m).to_numpy(dtype=np.float64) for m in self.metrics])
        nan = np.isnan(s)
        z = np.where(nan, 0.0, (s - self.mean) / self.sd)
        return np.hstack([z, nan.astype(np.float64)])

    def score(self, run: MetricRun) -> pd.Series:
        """P(wrong) for every box of ``run``, row for row with ``run.objects``."""
        return pd.Series(_sigmoid(self.features(run) @ self.weights + self.bias), index=run.objects.index)

    @classmethod
    def fit(cls, run: MetricRun, wrong: pd.Series, metrics: Iterable[str] | None = None, C: float = 1.0) -> "LearnedCombiner":
        """Fit on the boxes of ``wrong`` (annotation id -> True when the label is wrong)."""
        from scipy.optimize import minimize

        names = object_metrics(run, metrics)
        if not names:
            raise QualmetError("the metrics run has no object metric to combine")
        if wrong.nunique() < 2:
            raise QualmetError(f"the verified set needs both correct and wrong boxes; it has {len(wrong)} box(es), "
                               f"all {'wrong' if len(wrong) and wrong.iloc[0] else 'correct'}")
        s = np.column_stack([run.suspicion(m).to_numpy(dtype=np.float64) for m in names])
        mean = np.nan_to_num(np.nanmean(s, axis=0)) if len(s) else np.zeros(len(names))
        sd = np.nan_to_num(np.nanstd(s, axis=0), nan=1.0)
        sd[sd == 0] = 1.0
        model = cls(names, mean, sd, np.zeros(2 * len(names)), 0.0)
        rows = run.objects["annotation_id"].isin(wrong.index).to_numpy()
        X = model.features(run)[rows]
        y = wrong.reindex(run.objects.loc[rows, "annotation_id"].to_numpy()).to_numpy(dtype=np.float64)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:-1], theta[-1]
            z = X @ w + b
            # log(1 + e^z) - y z, written stably; the gradient is X^T (sigmoid(z) - y)
            nll = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 / C * (w @ w)
            r = _sigmoid(z) - y
            return nll, np.r_[X.T @ r + w / C, r.sum()]

        res = minimize(loss, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B")
        model.weights, model.bias = res.x[:-1], float(res.x[-1])
        return model


def with_learned(run: MetricRun, wrong: pd.Series, metrics: Iterable[str] | None = None,
                 name: str = "learned") -> tuple[MetricRun, LearnedCombiner]:
    """``run`` plus the object metric ``name``: P(wrong) of a :class:`LearnedCombiner` fitted on the
    boxes of ``wrong`` (annotation id -> True when wrong) over ``metrics``; and the model."""
    model = LearnedCombiner.fit(run, wrong, metrics=metrics)
    objects = run.objects.copy()
    objects[name] = model.score(run).to_numpy()
    worse = {m: run.spec(m).worse for m in run.metrics}
    return MetricRun.from_tables(objects, run.frames, {**worse, name: "high"}), model


def verified_frames(image_ids: Iterable[int], n: int, seed: int) -> list[int]:
    """``n`` frames drawn without replacement, seeded (a stream apart from the selection's)."""
    ids = np.sort(np.asarray(list(image_ids), dtype=np.int64))
    if not 1 <= n < len(ids):
        raise QualmetError(f"{n} verified frames: must be at least 1 and below the {len(ids)} frames")
    return sorted(int(i) for i in np.random.default_rng([seed, 21]).choice(ids, n, replace=False))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
