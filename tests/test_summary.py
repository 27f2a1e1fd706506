"""Experiment summaries: relative change vs random, paired comparison, files written."""
from __future__ import annotations

import numpy as np
import pandas as pd

from qualmet.summary import COCO_STATS, paired, summarise, write_summary


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


def test_relative_change_and_paired_test():
    s = summarise(results_table()).set_index("arm")
    assert np.isnan(s.loc["random"].get("AP_rel", np.nan))
    assert abs(s.loc["filter:tight", "AP_rel"] - 100 * 0.1 / 0.51) < 1e-9
    assert s.loc["filter:tight", "AP_p"] == 0.0  # the same +0.1 on every seed
    assert s.loc["filter:noise", "AP_p"] > 0.05
    lo, hi = s.loc["filter:tight", "AP_diff_ci"]
    assert abs(lo - 0.1) < 1e-9 and abs(hi - 0.1) < 1e-9


def test_paired_uses_only_common_seeds():
    b = pd.Series([0.5, 0.6, 0.7], index=[0, 1, 2])
    a = pd.Series([0.6, 0.8], index=[0, 1])
    pr = paired(b, a)
    assert pr["n"] == 2 and abs(pr["diff"] - 0.15) < 1e-12


def test_write_summary_files(tmp_path):
    write_summary(results_table(), tmp_path, "test experiment")
    md = (tmp_path / "summary.md").read_text()
    assert "| filter:tight | 3 |" in md and "+19.6%" in md and "Average over the 2 metric arm(s)" in md
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(tmp_path / "results.csv")) == 9


def test_oracle_arms_are_the_flagged_ones_not_those_named_so(tmp_path):
    res = results_table()
    res["arm"] = res["arm"].replace({"filter:noise": "relabel_oracle"})
    write_summary(res, tmp_path / "named", "t")  # no flags given: by name, so relabel_oracle counts as a metric arm
    assert "Average over the 2 metric arm(s)" in (tmp_path / "named" / "summary.md").read_text()
    write_summary(res, tmp_path / "flagged", "t", oracle_arms={"relabel_oracle"})
    md = (tmp_path / "flagged" / "summary.md").read_text()
    assert "Average over the 1 metric arm(s) (oracle arms excluded): AP +19.6%" in md
