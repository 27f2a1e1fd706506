"""Experiment summaries: every arm against the random baseline, mean ± std over seeds, relative
change in AP (precision) and AR@100 (recall), and a paired comparison over seeds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_text
from .stats import bootstrap_ci

COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
HEADLINE = ("AP", "AR100")


def _shared_seeds(base: pd.Series, arm: pd.Series) -> pd.DataFrame:
    """Columns ``b`` (baseline) and ``a`` (arm), one row per seed both have a value for."""
    return pd.concat([base, arm], axis=1, keys=["b", "a"]).dropna()


def paired(base: pd.Series, arm: pd.Series, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired comparison over the seeds both have: mean difference, 95% bootstrap CI, paired t-test p.

    ``p`` is NaN with fewer than two seeds or when every seed differs by the same amount, up to float
    rounding (a t-test is undefined there; two identical gains are not certainty)."""
    both = _shared_seeds(base, arm)
    d = (both["a"] - both["b"]).to_numpy()
    out = {"n": int(len(d)), "diff": float(d.mean()) if len(d) else np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if len(d) >= 2:
        out["ci_low"], out["ci_high"] = bootstrap_ci(d, n_boot, seed)
        if np.ptp(d) > 1e-9:  # float rounding of equal differences is not variation (p 8e-17 from 7e-18)
            from scipy.stats import ttest_rel

            out["p"] = float(ttest_rel(both["a"], both["b"]).pvalue)
    return out


def relative_change(base: pd.Series, arm: pd.Series) -> tuple[float, int]:
    """(100 * (arm - base) / base over the seeds both have a value for, how many seeds that is).

    Means over different seeds would compare different random draws: an arm that beats random on
    every seed it has could show a loss. NaN when no seed is shared or the baseline's mean is 0."""
    both = _shared_seeds(base, arm)
    bmean = float(both["b"].mean()) if len(both) else np.nan
    if not np.isfinite(bmean) or bmean == 0:
        return np.nan, int(len(both))
    return 100.0 * (float(both["a"].mean()) - bmean) / bmean, int(len(both))


def summarise(results: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """One row per arm: mean/std of each headline stat and, vs the baseline, relative change and paired test."""
    rows = []
    base = results[results.arm == baseline].set_index("seed") if baseline in set(results.arm) else None
    for arm, g in results.groupby("arm", sort=False):
        g = g.set_index("seed")
        row: dict = {"arm": arm, "seeds": len(g)}
        for stat in HEADLINE + ("AP50",):
            row[f"{stat}_mean"] = float(g[stat].mean())
            row[f"{stat}_std"] = float(g[stat].std(ddof=1)) if len(g) > 1 else np.nan
        if base is not None and arm != baseline:
            for stat in HEADLINE:
                pr = paired(base[stat], g[stat])
                row[f"{stat}_rel"], row[f"{stat}_paired_seeds"] = relative_change(base[stat], g[stat])
                row[f"{stat}_diff_ci"] = (pr["ci_low"], pr["ci_high"])
                row[f"{stat}_p"] = pr["p"]
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(m: float, s: float) -> str:
    if not np.isfinite(m):
        return "–"
    return f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "–"  # one seed, or the same difference on every seed: no test


def _cell(text: object) -> str:
    """A markdown table cell: a '|' in an arm name would otherwise start a new cell."""
    return str(text).replace("|", "\\|")


def n_seeds(summary: pd.DataFrame) -> int:
    """The experiment's number of seeds as a summary shows it: the most any arm has."""
    return int(pd.to_numeric(summary["seeds"], errors="coerce").max()) if "seeds" in summary and len(summary) else 0


def seeds_note(paired_seeds: float | None, seeds: int) -> str:
    """'1 of 3 seeds' when a change against random rests on fewer seeds than the experiment's, else ''."""
    if paired_seeds is None or not np.isfinite(paired_seeds) or int(paired_seeds) >= seeds:
        return ""
    return f"{int(paired_seeds)} of {seeds} seeds"


def _delta(rel: float, paired_seeds: float, seeds: int) -> str:
    """'+6.7%', with the seeds it rests on when fewer than the experiment's; 'n/a' without a baseline."""
    if not np.isfinite(rel):
        return "n/a"
    note = seeds_note(paired_seeds, seeds)
    return f"{rel:+.1f}%" + (f" ({note})" if note else "")


def _is_oracle(arm: str, oracle_arms: set[str] | None) -> bool:
    """An oracle arm (a ceiling, not a metric strategy): as the spec flags it, else by its name."""
    return arm in oracle_arms if oracle_arms is not None else arm.startswith("oracle")


def summary_markdown(summary: pd.DataFrame, title: str, baseline: str = "random", notes: str = "",
                     oracle_arms: set[str] | None = None) -> str:
    """The table a reader wants: each arm vs the baseline, with the average over metric arms."""
    lines = [f"# {title}", "", notes.strip(), "" if notes else "",
             "| arm | seeds | AP (mAP@[.5:.95]) | AP50 | AR@100 | ΔAP vs random | ΔAR vs random | paired p (AP / AR) |",
             "|---|---|---|---|---|---|---|---|"]
    seeds = n_seeds(summary)
    for r in summary.itertuples(index=False):
        r = r._asdict()
        if r["arm"] == baseline:
            rel_ap = rel_ar = "baseline"
            pvals = ""
        else:
            rel_ap, rel_ar = (_delta(r.get(f"{k}_rel", np.nan), r.get(f"{k}_paired_seeds", np.nan), seeds)
                              for k in HEADLINE)
            pvals = " / ".join(_p(r.get(k, np.nan)) for k in ("AP_p", "AR100_p"))
        lines.append(f"| {_cell(r['arm'])} | {r['seeds']} | {_fmt(r['AP_mean'], r['AP_std'])} | {_fmt(r['AP50_mean'], r['AP50_std'])} | "
                     f"{_fmt(r['AR100_mean'], r['AR100_std'])} | {rel_ap} | {rel_ar} | {pvals} |")
    others = summary[summary.arm != baseline]
    metric_arms = others[~others.arm.map(lambda a: _is_oracle(a, oracle_arms))]
    if len(metric_arms) and "AP_rel" in metric_arms:
        ap, ar = metric_arms.AP_rel.dropna(), metric_arms.AR100_rel.dropna()
        if len(ap) or len(ar):
            counted = (f"the {len(ap)} metric arm(s)" if len(ap) == len(ar)
                       else f"the metric arms ({len(ap)} for AP, {len(ar)} for AR@100)")
            left = len(metric_arms) - min(len(ap), len(ar))
            lines += ["", f"Average over {counted} (oracle arms excluded"
                          + (f"; {left} without a change against random left out" if left else "") + "): "
                          + f"AP {_pct(ap)}, AR@100 {_pct(ar)} relative to random."]
        else:
            lines += ["", "No metric arm has a change against random to average (the baseline's mean is 0 or "
                          "missing, or no seed is shared)."]
    lines += ["", "Δ is the relative change of the mean over the seeds an arm shares with random; p is a paired "
                  "t-test over those seeds (same seed = same random draw for sampling-based arms and the same "
                  "training seed), so small p means the gain is consistent across seeds (– with one seed, or "
                  "when every seed gives the same difference). With 3 seeds, treat p > 0.05 as 'not shown'."]
    return "\n".join(lines) + "\n"


def _pct(v: pd.Series) -> str:
    return f"{v.mean():+.1f}%" if len(v) else "n/a"


def plot_summary(results: pd.DataFrame, path: str | Path, title: str, baseline: str = "random",
                 oracle_arms: set[str] | None = None) -> Path:
    """Bar chart of AP and AR@100 per arm with std error bars; the baseline's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(results.arm))
    g = results.groupby("arm")
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(arms) + 4), 4.5), sharey=False)
    for ax, stat, label in zip(axes, HEADLINE, ("AP (precision, mAP@[.5:.95])", "AR@100 (recall)")):
        means = [g.get_group(a)[stat].mean() for a in arms]
        stds = [g.get_group(a)[stat].std(ddof=1) if len(g.get_group(a)) > 1 else 0 for a in arms]
        colors = ["#888888" if a == baseline else ("#c9a227" if _is_oracle(a, oracle_arms) else "#2a7ab9") for a in arms]
        ax.bar(range(len(arms)), means, yerr=stds, color=colors, capsize=4)
        for i, a in enumerate(arms):  # every seed as a dot: a reader sees the spread, not just the bar
            v = g.get_group(a)[stat].to_numpy()
            ax.scatter(np.full(len(v), i), v, color="black", s=10, zorder=3)
        if baseline in arms:
            ax.axhline(g.get_group(baseline)[stat].mean(), color="#444444", ls="--", lw=1)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
        ax.set_title(label)
        ax.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def write_summary(results: pd.DataFrame, out_dir: str | Path, title: str, notes: str = "",
                  oracle_arms: set[str] | None = None) -> pd.DataFrame:
    """Write results.csv, summary.csv, summary.md and summary.png into ``out_dir``; ``oracle_arms``
    (default: names starting with "oracle") are left out of the metric-arm average."""
    out = Path(out_dir)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    summary = summarise(results)
    with atomic_path(out / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    write_text(out / "summary.md", summary_markdown(summary, title, notes=notes, oracle_arms=oracle_arms)
               + "\n![AP and AR per arm](summary.png)\n")
    plot_summary(results, out / "summary.png", title, oracle_arms=oracle_arms)
    return summary
