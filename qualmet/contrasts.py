"""Paired contrasts between experiment arms over seeds: the statistics an experiment's verdict rests on.

A contrast "arm − base" pairs the two arms' scores seed by seed (same seed = same permutation of the
frames, same training seed and, with ``[noise] vary``, the same noise draw). For AP and AR@100 it
gives the mean difference in points (1 point = 0.01), a 95% t-based confidence interval over the
seeds, the paired t-test's p and that p Holm-corrected over every declared contrast (per statistic),
and a verdict in words:

- "better" / "worse": Holm-corrected p < 0.05, in the direction of the mean difference;
- "no effect": the whole confidence interval lies within ±1 point (±0.01), whatever p says;
- "no difference shown": anything else (too few seeds, or too much spread to tell).

With a ``clean`` arm (the random frames with their clean labels), a contrast against random also
gives the share of the noise gap it recovers, (arm − random) / (clean − random), with Fieller's
95% interval for a ratio of paired means (unbounded when clean − random itself is not clearly
above zero).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import QualmetError

STATS = ("AP", "AR100")
LEVEL = 0.95
ALPHA = 0.05
NO_EFFECT = 1.0  # points: a CI inside ±1 point (±0.01 AP) is "no effect"
BASELINE = "random"
CLEAN = "clean"


@dataclass(frozen=True)
class Contrast:
    arm: str
    base: str = BASELINE

    @property
    def label(self) -> str:
        return f"{self.arm} − {self.base}"


def parse_contrasts(raw: Any, arms: Sequence[str], where: str = "spec") -> list[Contrast]:
    """Contrasts from a spec's ``contrasts`` list: "arm" means arm − random, ["a", "b"] means a − b.
    Absent: every arm against random. Unknown arm names and repeats are errors naming ``where``."""
    if raw is None:
        return [Contrast(a) for a in arms if a != BASELINE]
    if not isinstance(raw, list) or not raw:
        raise QualmetError(f"{where}: 'contrasts' must be a non-empty list of arm names or [arm, base] pairs")
    out: list[Contrast] = []
    for n, item in enumerate(raw):
        pair = [item, BASELINE] if isinstance(item, str) else item
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise QualmetError(f"{where}: contrasts[{n}] must be an arm name or a pair [arm, base], got {item!r}")
        unknown = [x for x in pair if x not in arms]
        if unknown:
            raise QualmetError(f"{where}: contrasts[{n}] names unknown arm {unknown[0]!r}; arms: {', '.join(arms)}")
        if pair[0] == pair[1]:
            raise QualmetError(f"{where}: contrasts[{n}] compares {pair[0]!r} with itself")
        c = Contrast(pair[0], pair[1])
        if c in out:
            raise QualmetError(f"{where}: contrast {c.label!r} is declared twice")
        out.append(c)
    return out


def paired_difference(arm: pd.Series, base: pd.Series, level: float = LEVEL) -> dict[str, float]:
    """arm − base over the seeds (index) both have: n, mean, t-based CI and paired t-test p.

    CI and p are NaN with fewer than two seeds; p is NaN too when every seed gives the same
    difference up to float rounding (the test is undefined there)."""
    from scipy import stats

    both = pd.concat([arm, base], axis=1, keys=["a", "b"]).dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=np.float64)
    out = {"n": int(len(d)), "diff": float(d.mean()) if len(d) else np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan}
    if len(d) < 2:
        return out
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    out["lo"], out["hi"] = out["diff"] - half, out["diff"] + half
    if np.ptp(d) > 1e-12:
        out["p"] = float(stats.ttest_rel(both["a"], both["b"]).pvalue)
    return out


def difference_line(name: str, d: dict[str, float]) -> str:
    """One markdown bullet for a :func:`paired_difference` of fractions, in points:
    ``- AP: +5.09 [+3.78, +6.40], p 0.004 (3 seeds)``."""
    return (f"- {name}: {d['diff'] * 100:+.2f} [{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}], "
            f"p {d['p']:.3f} ({d['n']:.0f} seeds)")


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error) of ``pvalues``; NaN stays NaN and does not count
    towards the family size."""
    p = np.asarray(list(pvalues), dtype=np.float64)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def ratio_ci(x: np.ndarray, y: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """mean(x) / mean(y) for paired samples, with Fieller's interval: the r where
    (x̄ − r ȳ)² = t² var(x − r y) / n. (NaN, NaN) bounds when the interval is unbounded (ȳ not
    clearly away from 0) or there are fewer than two pairs."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    r = float(x.mean() / y.mean()) if n and y.mean() != 0 else np.nan
    if n < 2:
        return r, np.nan, np.nan
    q = stats.t.ppf(0.5 + level / 2, n - 1) ** 2 / n
    cov = np.cov(x, y, ddof=1)
    a = y.mean() ** 2 - q * cov[1, 1]
    b = x.mean() * y.mean() - q * cov[0, 1]
    c = x.mean() ** 2 - q * cov[0, 0]
    disc = b * b - a * c
    if a <= 0 or disc < 0:
        return r, np.nan, np.nan
    lo, hi = sorted(((b - np.sqrt(disc)) / a, (b + np.sqrt(disc)) / a))
    return r, float(lo), float(hi)


def verdict(lo: float, hi: float, p_holm: float, diff: float) -> str:
    """Words that follow from a CI (in points) and a Holm-corrected p (see the module's docstring)."""
    if np.isfinite(lo) and np.isfinite(hi) and lo >= -NO_EFFECT and hi <= NO_EFFECT:
        return "no effect"
    if np.isfinite(p_holm) and p_holm < ALPHA:
        return "better" if diff > 0 else "worse"
    return "no difference shown"


def _by_seed(results: pd.DataFrame, arm: str, stat: str) -> pd.Series:
    return results[results["arm"] == arm].set_index("seed")[stat].astype("float64") * 100.0  # points


def contrast_table(results: pd.DataFrame, contrasts: Sequence[Contrast], stats: Sequence[str] = STATS) -> pd.DataFrame:
    """One row per contrast whose arms both have results: per stat the difference in points with its CI,
    p, Holm-corrected p (over these contrasts), verdict and, against random with a clean arm present,
    the gap-recovery share with its CI. ``results``: one row per arm x seed (arm, seed, the stats)."""
    have = set(results["arm"])
    todo = [c for c in contrasts if c.arm in have and c.base in have]
    rows: list[dict[str, Any]] = [{"contrast": c.label, "arm": c.arm, "base": c.base} for c in todo]
    for stat in stats:
        diffs = [paired_difference(_by_seed(results, c.arm, stat), _by_seed(results, c.base, stat)) for c in todo]
        adjusted = holm([d["p"] for d in diffs])
        for row, d, ph, c in zip(rows, diffs, adjusted, todo):
            row["seeds"] = max(row.get("seeds", 0), d["n"])
            row.update({f"{stat}_diff": d["diff"], f"{stat}_lo": d["lo"], f"{stat}_hi": d["hi"], f"{stat}_p": d["p"],
                        f"{stat}_p_holm": ph, f"{stat}_verdict": verdict(d["lo"], d["hi"], ph, d["diff"])})
            row.update(_gap(results, c, stat))
    return pd.DataFrame(rows)


def _gap(results: pd.DataFrame, c: Contrast, stat: str) -> dict[str, float]:
    """Share of the noise gap (clean − random) that ``c``'s arm recovers, over the seeds all three share."""
    if c.base != BASELINE or CLEAN not in set(results["arm"]) or c.arm == CLEAN:
        return {}
    both = pd.concat([_by_seed(results, a, stat) for a in (c.arm, BASELINE, CLEAN)], axis=1).dropna()
    if not len(both):
        return {}
    x = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy()
    y = (both.iloc[:, 2] - both.iloc[:, 1]).to_numpy()
    r, lo, hi = ratio_ci(x, y)
    return {f"{stat}_gap": r, f"{stat}_gap_lo": lo, f"{stat}_gap_hi": hi}
