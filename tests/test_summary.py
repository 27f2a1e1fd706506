"""Experiment summaries: relative change vs random, counts per arm, the declared contrasts, files written."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qualmet.contrasts import difference_line, paired_difference
from qualmet.summary import COCO_STATS, summarise, write_summary


def results_table():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        base = 0.5 + 0.01 * seed
        for arm, gain in (("random", 0.0), ("filter:tight", 0.1), ("filter:noise", 0.0)):
            r = {"arm": arm, "seed": seed}
            for s in COCO_STATS:
                r[s] = base + gain + (rng.normal(0, 0.01) if arm == "filter:noise" else 0.0)
            rows.append(r)
    return pd.DataFrame(rows)


def test_relative_change_and_paired_difference():
    s = summarise(results_table()).set_index("arm")
    assert np.isnan(s.loc["random"].get("AP_rel", np.nan))
    assert abs(s.loc["filter:tight", "AP_rel"] - 100 * 0.1 / 0.51) < 1e-9
    d = paired_difference(results_table().query("arm == 'filter:tight'").set_index("seed").AP,
                          results_table().query("arm == 'random'").set_index("seed").AP)
    assert np.isnan(d["p"])  # the same +0.1 on every seed: a t-test is undefined, not p = 0
    assert abs(d["lo"] - 0.1) < 1e-9 and abs(d["hi"] - 0.1) < 1e-9


def test_paired_uses_only_common_seeds():
    b = pd.Series([0.5, 0.6, 0.7], index=[0, 1, 2])
    a = pd.Series([0.6, 0.8], index=[0, 1])
    pr = paired_difference(a, b)
    assert pr["n"] == 2 and abs(pr["diff"] - 0.15) < 1e-12


def test_difference_line_in_points_against_scipy():
    from scipy import stats

    a, b = pd.Series([0.62, 0.60, 0.67], index=[0, 1, 2]), pd.Series([0.58, 0.59, 0.61], index=[0, 1, 2])
    d = (a - b).to_numpy()
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    p = stats.ttest_rel(a, b).pvalue
    want = (f"- AP: {d.mean() * 100:+.2f} [{(d.mean() - half) * 100:+.2f}, {(d.mean() + half) * 100:+.2f}], "
            f"p {p:.3f} (3 seeds)")
    assert difference_line("AP", paired_difference(a, b)) == want
    assert want.startswith("- AP: +3.67 [")


def test_write_summary_files(tmp_path):
    write_summary(results_table(), tmp_path, "test experiment")
    md = (tmp_path / "summary.md").read_text()
    assert "| filter:tight | 3 |" in md and "+19.6%" in md and "Average over the 2 metric arm(s)" in md
    # +10 points on every seed: a CI of zero width, no p (undefined), so no verdict beyond "not shown"
    assert "| filter:tight − random | 3 | +10.00 [+10.00, +10.00] | – | no difference shown |" in md
    c = pd.read_csv(tmp_path / "contrasts.csv")
    assert list(c.contrast) == ["filter:tight − random", "filter:noise − random"]
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(tmp_path / "results.csv")) == 9


def test_oracle_arms_are_the_flagged_ones_not_those_named_so(tmp_path):
    res = results_table()
    res["arm"] = res["arm"].replace({"filter:noise": "relabel_oracle"})
    write_summary(res, tmp_path / "named", "t")  # no flags given: by name, so relabel_oracle counts as a metric arm
    assert "Average over the 2 metric arm(s)" in (tmp_path / "named" / "summary.md").read_text()
    write_summary(res, tmp_path / "flagged", "t", oracle_arms={"relabel_oracle"})
    md = (tmp_path / "flagged" / "summary.md").read_text()
    assert "Average over the 1 metric arm(s) (oracle and anchor arms excluded): AP +19.6%" in md


def _table(vals: dict) -> pd.DataFrame:
    return pd.DataFrame([{"arm": a, "seed": sd, **{k: v for k in COCO_STATS}} for (a, sd), v in vals.items()])


def test_change_vs_random_uses_the_seeds_both_arms_have(tmp_path):
    # random finished three seeds, the arm only seed 0 (its seed-1 training crashed): on that seed it
    # beats random by 0.02; a mean over different seeds would say it lost 12.7%
    res = _table({("random", 0): .30, ("random", 1): .40, ("random", 2): .40, ("filter:x", 0): .32})
    s = summarise(res).set_index("arm")
    assert abs(s.loc["filter:x", "AP_rel"] - 100 * 0.02 / 0.30) < 1e-9
    assert s.loc["filter:x", "AP_paired_seeds"] == 1
    write_summary(res, tmp_path, "partial")
    md = (tmp_path / "summary.md").read_text()
    assert "| filter:x | 1 | 0.320 | 0.320 | 0.320 | +6.7% (1 of 3 seeds) | +6.7% (1 of 3 seeds) | – | – | – |" in md
    assert "| filter:x − random | 1 | +2.00 | – | no difference shown |" in md  # one seed: no interval


def test_zero_or_missing_baseline_is_not_a_percentage(tmp_path):
    write_summary(_table({("random", 0): 0.0, ("random", 1): 0.0, ("filter:x", 0): .05, ("filter:x", 1): .07}),
                  tmp_path / "zero", "zero")
    md = (tmp_path / "zero" / "summary.md").read_text()
    assert "nan" not in md and "| n/a | n/a |" in md and "No metric arm has a change against random" in md
    write_summary(_table({("random", 0): .3, ("random", 1): .3, ("filter:a", 0): np.nan, ("filter:a", 1): np.nan,
                          ("filter:b", 0): .33, ("filter:b", 1): .33}), tmp_path / "nan", "nan arm")
    md = (tmp_path / "nan" / "summary.md").read_text()
    assert "| filter:a | 2 | – | – | – | n/a | n/a |" in md
    assert ("Average over the 1 metric arm(s) (oracle and anchor arms excluded; 1 without a change against random left out): "
            "AP +10.0%") in md


def test_arm_name_with_a_pipe_stays_in_its_cell(tmp_path):
    write_summary(_table({("random", 0): .3, ("combined:a|b", 0): .3}), tmp_path, "pipe")
    lines = (tmp_path / "summary.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith("| combined"))
    header = next(line for line in lines if line.startswith("| arm | seeds |"))
    assert row.startswith("| combined:a\\|b |")
    assert len(row.replace("\\|", "").split("|")) == len(header.split("|"))


def test_equal_differences_up_to_float_rounding_give_no_p():
    """0.0375 better on both seeds, differing by 7e-18 of rounding: p was shown as 8.3e-17."""
    base = pd.Series([0.5125, 0.4625], index=[0, 1])
    arm = pd.Series([0.55, 0.5], index=[0, 1])
    d = (arm - base).to_numpy()
    assert 0 < np.ptp(d) < 1e-15  # the rounding is really there
    assert np.isnan(paired_difference(arm, base)["p"])
    assert paired_difference(arm + pd.Series([0.0, 0.01], index=[0, 1]), base)["p"] > 0  # a real spread gets a p


def test_counts_gap_and_verdicts_reach_summary_md(tmp_path):
    """Frames, boxes, ignore regions and known-wrong boxes per arm (means over seeds); with a clean arm, the share of
    the noise gap each arm recovers; a consistent gain over 4 seeds is "better"."""
    rows = []
    for seed in range(4):
        for arm, ap, wrong, ignore in (("random", 0.50, 30, 0), ("clean", 0.56, 0, 0), ("filter:x", 0.53, 12, 7)):
            jitter = 0.004 * ((seed * 7 + len(arm)) % 3) if arm != "random" else 0.0
            rows.append({"arm": arm, "seed": seed, **{k: ap + jitter for k in COCO_STATS},
                         "n_frames": 50 + seed % 2, "n_boxes": 110, "n_ignore": ignore, "n_wrong": wrong})
    write_summary(pd.DataFrame(rows), tmp_path, "gap", oracle_arms={"clean"})
    md = (tmp_path / "summary.md").read_text()
    assert "| 50.5 | 110 | 0 | 30 |" in md and "| 50.5 | 110 | 7 | 12 |" in md  # frames, boxes, ignore regions, wrong
    c = pd.read_csv(tmp_path / "contrasts.csv").set_index("arm")
    assert c.loc["filter:x", "AP_verdict"] == "better" and c.loc["clean", "AP_verdict"] == "better"
    gap = c.loc["filter:x", "AP_gap"]
    res = pd.DataFrame(rows).pivot(index="seed", columns="arm", values="AP")
    assert gap == pytest.approx((res["filter:x"] - res["random"]).mean() / (res["clean"] - res["random"]).mean())
    assert f"| {100 * gap:.0f}% [" in md
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
