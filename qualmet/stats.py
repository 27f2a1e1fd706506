"""Small statistics helpers, on scipy's implementations."""
from __future__ import annotations

import numpy as np


def auroc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a random positive scores higher than a random
    negative (ties count half), i.e. the Mann-Whitney U of the positives over n_pos * n_neg
    (``scipy.stats.mannwhitneyu``). NaN scores are dropped; NaN if either class is empty after that."""
    from scipy.stats import mannwhitneyu

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # only U is used: the asymptotic method skips the exact p-value's cost on small samples
    u = mannwhitneyu(s[y], s[~y], alternative="two-sided", method="asymptotic").statistic
    return float(u / (n_pos * n_neg))


def spearman(x, y) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``; ties get average ranks) over the pairs
    where ``x`` is not NaN; NaN with fewer than 3 pairs or when either side is constant."""
    from scipy.stats import spearmanr

    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    keep = ~np.isnan(a)
    a, b = a[keep], b[keep]
    if len(a) <= 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (``scipy.stats.bootstrap``), ``n_boot``
    resamples drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same interval."""
    from scipy.stats import bootstrap

    d = np.asarray(values, dtype=np.float64).ravel()
    res = bootstrap((d,), np.mean, n_resamples=n_boot, method="percentile", confidence_level=level,
                    rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
