"""Experiment summaries: per arm the mean ± std over seeds of AP (precision) and AR@100 (recall),
its relative change against random and what it trained on (frames, boxes, ignore regions, known-wrong
boxes); per declared contrast the paired difference with its CI, Holm-corrected p, verdict and share of the
noise gap recovered (:mod:`qualmet.contrasts`); and a forest plot of those differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_text
from .contrasts import NO_EFFECT, Contrast, contrast_table, parse_contrasts
from .plots import forest_png

COCO_STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
HEADLINE = ("AP", "AR100")


def _shared_seeds(base: pd.Series, arm: pd.Series) -> pd.DataFrame:
    """Columns ``b`` (baseline) and ``a`` (arm), one row per seed both have a value for."""
    return pd.concat([base, arm], axis=1, keys=["b", "a"]).dropna()


def relative_change(base: pd.Series, arm: pd.Series) -> tuple[float, int]:
    """(100 * (arm - base) / base over the seeds both have a value for, how many seeds that is).

    Means over different seeds would compare different random draws: an arm that beats random on
    every seed it has could show a loss. NaN when no seed is shared or the baseline's mean is 0."""
    both = _shared_seeds(base, arm)
    bmean = float(both["b"].mean()) if len(both) else np.nan
    if not np.isfinite(bmean) or bmean == 0:
        return np.nan, int(len(both))
    return 100.0 * (float(both["a"].mean()) - bmean) / bmean, int(len(both))


# per arm x seed: what it trained on (n_ignore: ignore regions, iscrowd=1; n_wrong: known-wrong boxes kept)
COUNTS = ("n_frames", "n_boxes", "n_ignore", "n_wrong")


def summarise(results: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """One row per arm: mean/std of each headline stat, the mean of each count, and the relative change
    against the baseline over the seeds both have."""
    rows = []
    base = results[results.arm == baseline].set_index("seed") if baseline in set(results.arm) else None
    for arm, g in results.groupby("arm", sort=False):
        g = g.set_index("seed")
        row: dict = {"arm": arm, "seeds": len(g)}
        for stat in HEADLINE + ("AP50",):
            row[f"{stat}_mean"] = float(g[stat].mean())
            row[f"{stat}_std"] = float(g[stat].std(ddof=1)) if len(g) > 1 else np.nan
        for c in COUNTS:
            row[c] = float(g[c].mean()) if c in g and g[c].notna().any() else np.nan
        if base is not None and arm != baseline:
            for stat in HEADLINE:
                row[f"{stat}_rel"], row[f"{stat}_paired_seeds"] = relative_change(base[stat], g[stat])
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


def _count(v: float) -> str:
    return "–" if not np.isfinite(v) else (f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}")


def arms_markdown(summary: pd.DataFrame, baseline: str = "random") -> list[str]:
    """The per-arm table: scores, relative change against the baseline, and what each arm trained on."""
    lines = ["| arm | seeds | AP (mAP@[.5:.95]) | AP50 | AR@100 | ΔAP vs random | ΔAR vs random | frames | boxes | "
             "ignore regions | known-wrong boxes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    seeds = n_seeds(summary)
    for r in summary.to_dict("records"):
        if r["arm"] == baseline:
            rel_ap = rel_ar = "baseline"
        else:
            rel_ap, rel_ar = (_delta(r.get(f"{k}_rel", np.nan), r.get(f"{k}_paired_seeds", np.nan), seeds)
                              for k in HEADLINE)
        counts = " | ".join(_count(r.get(c, np.nan)) for c in COUNTS)
        lines.append(f"| {_cell(r['arm'])} | {r['seeds']} | {_fmt(r['AP_mean'], r['AP_std'])} | "
                     f"{_fmt(r['AP50_mean'], r['AP50_std'])} | {_fmt(r['AR100_mean'], r['AR100_std'])} | {rel_ap} | "
                     f"{rel_ar} | {counts} |")
    return lines


def _ci(d: float, lo: float, hi: float) -> str:
    if not np.isfinite(d):
        return "–"
    return f"{d:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else "")


def _gap(r: dict, stat: str) -> str:
    g = r.get(f"{stat}_gap", np.nan)
    if g is None or not np.isfinite(g):
        return "–"
    lo, hi = r.get(f"{stat}_gap_lo", np.nan), r.get(f"{stat}_gap_hi", np.nan)
    return f"{100 * g:.0f}%" + (f" [{100 * lo:.0f}%, {100 * hi:.0f}%]" if np.isfinite(lo) else " [unbounded]")


def contrasts_markdown(table: pd.DataFrame) -> list[str]:
    """The contrast table: differences in points with 95% CIs, Holm-corrected p, verdicts, gap recovered."""
    if not len(table):
        return ["No declared contrast has results for both of its arms yet."]
    lines = ["| contrast | seeds | ΔAP (points) [95% CI] | p (Holm) | AP | ΔAR@100 (points) [95% CI] | p (Holm) | "
             "AR@100 | noise gap recovered, AP [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        cells = [_cell(r["contrast"]), str(r["seeds"])]
        for stat in HEADLINE:
            cells += [_ci(r[f"{stat}_diff"], r[f"{stat}_lo"], r[f"{stat}_hi"]), _p(r[f"{stat}_p_holm"]),
                      r[f"{stat}_verdict"]]
        cells.append(_gap(r, "AP"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_class_markdown(per_class: pd.DataFrame) -> list[str]:
    """Per-class AP (mean ± std over seeds) per arm x class, from rows of arm, seed, class, AP."""
    if per_class is None or not len(per_class):
        return []
    classes = list(dict.fromkeys(per_class["class"]))
    lines = ["## AP per class", "", "| arm | " + " | ".join(_cell(c) for c in classes) + " |",
             "|---|" + "---|" * len(classes)]
    for arm, g in per_class.groupby("arm", sort=False):
        cells = []
        for c in classes:
            v = pd.to_numeric(g.loc[g["class"] == c, "AP"], errors="coerce").dropna()
            cells.append(_fmt(float(v.mean()) if len(v) else np.nan, float(v.std(ddof=1)) if len(v) > 1 else np.nan))
        lines.append(f"| {_cell(arm)} | " + " | ".join(cells) + " |")
    return ["", *lines, "", "AP (mAP@[.5:.95]) of each class, mean ± std over the seeds."]


def summary_markdown(summary: pd.DataFrame, table: pd.DataFrame, title: str, baseline: str = "random",
                     notes: str = "", oracle_arms: set[str] | None = None,
                     per_class: pd.DataFrame | None = None) -> str:
    """summary.md: the arms, the metric-arm average, the declared contrasts and how to read them."""
    lines = [f"# {title}", "", notes.strip(), "" if notes else ""] + arms_markdown(summary, baseline)
    others = summary[summary.arm != baseline]
    metric_arms = others[~others.arm.map(lambda a: _is_oracle(a, oracle_arms))]
    if len(metric_arms) and "AP_rel" in metric_arms:
        ap, ar = metric_arms.AP_rel.dropna(), metric_arms.AR100_rel.dropna()
        if len(ap) or len(ar):
            counted = (f"the {len(ap)} metric arm(s)" if len(ap) == len(ar)
                       else f"the metric arms ({len(ap)} for AP, {len(ar)} for AR@100)")
            left = len(metric_arms) - min(len(ap), len(ar))
            lines += ["", f"Average over {counted} (oracle and anchor arms excluded"
                          + (f"; {left} without a change against random left out" if left else "") + "): "
                          + f"AP {_pct(ap)}, AR@100 {_pct(ar)} relative to random."]
        else:
            lines += ["", "No metric arm has a change against random to average (the baseline's mean is 0 or "
                          "missing, or no seed is shared)."]
    lines += ["", "## Declared contrasts", ""] + contrasts_markdown(table)
    lines += ["", "Each contrast pairs the two arms seed by seed (same seed: the same permutation of the frames, "
                  "the same training seed and noise draw). Δ is the mean difference in points (1 point = 0.01 AP); "
                  "the interval is a 95% t-interval over the seeds; p is a paired t-test, Holm-corrected over the "
                  "declared contrasts (per statistic). Verdicts: \"better\"/\"worse\" when Holm's p < 0.05; "
                  f"\"no effect\" only when the whole interval lies within ±{NO_EFFECT:g} point; otherwise "
                  "\"no difference shown\". Gap recovered: (arm − random) / (clean − random), with Fieller's 95% "
                  "interval (unbounded when clean − random is not clearly above zero). Frames, boxes, ignore "
                  "regions (boxes the loss neither learns nor penalises) and known-wrong boxes are means over "
                  "seeds; known-wrong boxes are the trained-on boxes the noise manifest says are wrong."]
    lines += per_class_markdown(per_class)
    return "\n".join(lines) + "\n"


def _pct(v: pd.Series) -> str:
    return f"{v.mean():+.1f}%" if len(v) else "n/a"


def write_summary(results: pd.DataFrame, out_dir: str | Path, title: str, notes: str = "",
                  oracle_arms: set[str] | None = None, contrasts: list[Contrast] | None = None,
                  name: str | None = None, per_class: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write results.csv, summary.csv, contrasts.csv, summary.md and summary.png (the forest plot) into
    ``out_dir``. ``contrasts`` default to every arm against random; ``oracle_arms`` (default: names
    starting with "oracle") are left out of the metric-arm average. ``name`` (another test label set)
    writes results_<name>.csv, summary_<name>.md and so on instead; ``per_class`` (rows of arm, seed,
    class, AP) adds a per-class AP table to the markdown."""
    out = Path(out_dir)
    sfx = f"_{name}" if name else ""
    with atomic_path(out / f"results{sfx}.csv") as tmp:
        results.to_csv(tmp, index=False)
    summary = summarise(results)
    with atomic_path(out / f"summary{sfx}.csv") as tmp:
        summary.to_csv(tmp, index=False)
    if contrasts is None:
        contrasts = parse_contrasts(None, list(dict.fromkeys(results["arm"])))
    table = contrast_table(results, contrasts)
    with atomic_path(out / f"contrasts{sfx}.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(out / f"summary{sfx}.md", summary_markdown(summary, table, title, notes=notes, oracle_arms=oracle_arms,
                                                          per_class=per_class)
               + f"\n![paired differences with 95% CIs](summary{sfx}.png)\n")
    forest_png(table, out / f"summary{sfx}.png", title)
    return summary
