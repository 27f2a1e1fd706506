"""Paired contrasts on a fixed table, checked against hand computation and scipy: the t-based CI,
Holm's correction, Fieller's interval for the gap-recovery share, and the verdict words."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qualmet.contrasts import Contrast, contrast_table, holm, parse_contrasts, ratio_ci, verdict
from qualmet.errors import QualmetError

RANDOM = np.array([0.50, 0.52, 0.48, 0.51])
GAINS = {"random": [0, 0, 0, 0], "clean": [0.06, 0.05, 0.07, 0.04], "a": [0.02, 0.04, 0.03, 0.05],
         "b": [0.003, -0.002, 0.001, 0.0], "c": [-0.03, -0.05, -0.04, -0.06]}


def results() -> pd.DataFrame:
    rows = []
    for arm, g in GAINS.items():
        for seed, (r, d) in enumerate(zip(RANDOM, g)):
            rows.append({"arm": arm, "seed": seed, "AP": r + d, "AR100": r + 0.1 + d / 2})
    return pd.DataFrame(rows)


def test_difference_ci_and_p_match_hand_computation_and_scipy():
    t = contrast_table(results(), parse_contrasts(None, list(GAINS))).set_index("arm")
    d = np.array([2.0, 4.0, 3.0, 5.0])  # arm a - random, in points
    sd = np.sqrt(((d - 3.5) ** 2).sum() / 3)  # sqrt(5/3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3 df) * sd / sqrt(4)
    assert t.loc["a", "AP_diff"] == pytest.approx(3.5)
    assert (t.loc["a", "AP_lo"], t.loc["a", "AP_hi"]) == pytest.approx((3.5 - half, 3.5 + half))
    tstat = 3.5 / (sd / 2)
    assert t.loc["a", "AP_p"] == pytest.approx(2 * stats.t.sf(tstat, 3))
    assert t.loc["a", "AP_p"] == pytest.approx(stats.ttest_rel(RANDOM + GAINS["a"], RANDOM).pvalue)
    assert t.loc["a", "AR100_diff"] == pytest.approx(1.75)  # half the AP gain, in points
    assert t.loc["a", "seeds"] == 4


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 2 * 0.5 = 1, and capped at 1
    t = contrast_table(results(), parse_contrasts(None, list(GAINS))).set_index("arm")
    p = t["AP_p"]
    order = p.sort_values().index  # clean, c, a, b: m = 4
    m = len(p)
    expected, running = {}, 0.0
    for k, arm in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[arm]))
        expected[arm] = running
    assert t["AP_p_holm"].to_dict() == pytest.approx(expected)
    only_two = contrast_table(results(), parse_contrasts(["a", "b"], list(GAINS))).set_index("arm")
    assert only_two.loc["a", "AP_p_holm"] == pytest.approx(2 * min(p["a"], p["b"]))  # the family is what is declared


def test_verdict_words_follow_the_ci_and_holm_p():
    t = contrast_table(results(), parse_contrasts(None, list(GAINS))).set_index("arm")
    assert t.loc["a", "AP_verdict"] == "better" and t.loc["c", "AP_verdict"] == "worse"
    assert t.loc["b", "AP_verdict"] == "no effect"  # CI about [-0.3, +0.4] points: inside ±1
    assert verdict(-0.5, 3.0, 0.4, 1.2) == "no difference shown"
    assert verdict(-0.5, 0.9, 0.9, 0.2) == "no effect"
    assert verdict(1.5, 3.0, 0.07, 2.0) == "no difference shown"  # CI excludes 0 but Holm's p does not pass
    assert verdict(np.nan, np.nan, np.nan, 2.0) == "no difference shown"  # one seed


def test_gap_recovery_share_and_fieller_interval():
    t = contrast_table(results(), parse_contrasts(None, list(GAINS))).set_index("arm")
    assert t.loc["a", "AP_gap"] == pytest.approx(3.5 / 5.5)
    assert "AP_gap" not in t.columns or np.isnan(t.loc["clean", "AP_gap"])
    x, y = np.array([2.0, 4, 3, 5]), np.array([6.0, 5, 7, 4])
    r, lo, hi = ratio_ci(x, y)
    q = 3.182446305284263 ** 2 / 4
    for bound in (lo, hi):  # Fieller's bounds solve (x̄ - r ȳ)² = t² var(x - r y) / n
        assert (x.mean() - bound * y.mean()) ** 2 == pytest.approx(q * np.var(x - bound * y, ddof=1))
    assert lo < r < hi and (t.loc["a", "AP_gap_lo"], t.loc["a", "AP_gap_hi"]) == pytest.approx((lo, hi))
    _, lo, hi = ratio_ci(x, np.array([1.0, -1.5, 0.5, 0.2]))  # clean - random not clearly above 0
    assert np.isnan(lo) and np.isnan(hi)


def test_one_seed_gives_a_difference_without_ci():
    res = results()
    t = contrast_table(res[res.seed == 0], [Contrast("a")]).iloc[0]
    assert t["AP_diff"] == pytest.approx(2.0) and np.isnan(t["AP_lo"]) and np.isnan(t["AP_p"])
    assert t["AP_verdict"] == "no difference shown"


@pytest.mark.parametrize("raw,words", [
    ("a", "must be a non-empty list"), ([], "must be a non-empty list"), (["zz"], "unknown arm 'zz'"),
    ([["a", "a"]], "compares 'a' with itself"), (["a", ["a", "random"]], "declared twice"),
    ([["a"]], r"must be an arm name or a pair \[arm, base\]"),
])
def test_bad_contrasts_are_one_clear_error(raw, words):
    with pytest.raises(QualmetError, match=words):
        parse_contrasts(raw, list(GAINS), where="spec.toml")


def test_pairs_against_another_base():
    cs = parse_contrasts(["a", ["a", "clean"]], list(GAINS))
    assert [c.label for c in cs] == ["a − random", "a − clean"]
    t = contrast_table(results(), cs).set_index("contrast")
    assert t.loc["a − clean", "AP_diff"] == pytest.approx(3.5 - 5.5)
