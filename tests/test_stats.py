"""The rank-based AUROC helper."""
from __future__ import annotations

import numpy as np
import pytest

from qualmet.stats import auroc


def test_auroc_helper_known_values():
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert np.isnan(auroc([1, 2], [1, 1]))
    assert auroc([np.nan, 1, 2], [1, 0, 1]) == 1.0  # NaN dropped


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auroc(s, y) == pytest.approx(pairwise)


def test_average_precision_known_values_and_ties():
    from qualmet.label_errors import average_precision

    y = np.array([1, 0, 1, 0, 0], bool)
    assert average_precision(np.array([5, 4, 3, 2, 1.0]), y) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(np.array([5, 1, 4, 2, 3.0]), y) == pytest.approx(1.0)
    flat = np.zeros(5)  # one threshold: precision = prevalence, whatever the row order
    assert average_precision(flat, y) == pytest.approx(0.4)
    assert average_precision(flat, y[::-1]) == pytest.approx(0.4)
    # a tie between a positive and a negative counts as one step, in either order
    s = np.array([2, 1, 1, 0.0])
    assert average_precision(s, np.array([1, 1, 0, 0], bool)) == average_precision(s, np.array([1, 0, 1, 0], bool))
    assert np.isnan(average_precision(s, np.zeros(4, bool)))


def test_precision_at_k_counts_ties_at_the_cut_by_their_hit_rate():
    from qualmet.label_errors import precision_at_k

    y = np.array([1, 0, 1, 0, 0], bool)
    assert precision_at_k(np.array([5, 4, 3, 2, 1.0]), y, 2) == 0.5
    assert precision_at_k(np.array([5, 1, 4, 2, 3.0]), y, 2) == 1.0
    # a duplicate and its source share a score: one of the two places at the cut is a hit on average,
    # whichever row comes first
    s = np.array([3.0, 1.0, 1.0, 0.0])
    assert precision_at_k(s, np.array([0, 1, 0, 0], bool), 2) == precision_at_k(s, np.array([0, 0, 1, 0], bool), 2) == 0.25
    assert precision_at_k(np.array([np.nan, 2.0, 1.0]), np.array([1, 0, 0], bool), 1) == 0.0  # NaN ranks last
    rng = np.random.default_rng(0)
    for _ in range(20):  # the table's row order never matters
        s, y = rng.integers(0, 4, 30).astype(float), rng.random(30) < 0.3
        k = int(y.sum())
        perm = rng.permutation(30)
        assert precision_at_k(s, y, k) == pytest.approx(precision_at_k(s[perm], y[perm], k))


def test_frames_that_lost_a_box_are_scored_against_untouched_frames():
    """Like the per-box rows (each error type against clean boxes): frames holding only other injected
    errors are not negatives of the 'missing' row (they were, so object_count's AUROC mixed two questions)."""
    import pandas as pd

    from qualmet.label_errors import detection_table

    frames = pd.DataFrame({"image_id": [1, 2, 3, 4, 5, 6], "object_count": [1.0, 1.0, 3.0, 3.0, 2.0, 2.0]})
    objects = pd.DataFrame({"annotation_id": [10, 11], "image_id": [3, 4], "object_count_obj": [0.0, 0.0]})
    manifest = pd.DataFrame({"annotation_id": [90, 91, 10, 11], "image_id": [1, 2, 3, 4],
                             "type": ["missing", "missing", "spurious", "spurious"]})
    from qualmet.metric_run import MetricRun

    run = MetricRun.from_tables(objects, frames, {"object_count": "low"})
    row = detection_table(run, manifest).set_index("type").loc["missing"]
    # positives: frames 1, 2 (one box each); negatives: the untouched frames 5, 6 (two each), not 3, 4
    assert (row["positives"], row["n"], row["auroc"]) == (2, 4, 1.0)


def _auroc_by_ranks(scores, labels) -> float:
    """qualmet's own AUROC before it used scipy (average ranks, Mann-Whitney U), kept as the reference."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    _, start, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(start + (counts + 1) / 2.0, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _spearman_by_pandas(v, y) -> float:
    """importance_table's own Spearman before it used scipy: pandas ranks, Pearson correlation of them."""
    import pandas as pd

    v, y = pd.Series(v, dtype="float64"), np.asarray(y)
    ok = v.notna()
    if ok.sum() <= 2 or y[ok.to_numpy()].std() == 0:
        return float("nan")
    return float(v[ok].rank().corr(pd.Series(y[ok.to_numpy()], index=v[ok].index).astype(float).rank()))


@pytest.mark.parametrize("n", [3, 5, 60, 1000])
def test_scipy_auroc_and_spearman_give_the_former_numbers(n):
    """AUROC from scipy's Mann-Whitney U equals the former rank formula exactly; Spearman from scipy
    equals the former pandas one to 1e-12 (they differ in the last bit at most)."""
    from qualmet.stats import spearman

    rng = np.random.default_rng(n)
    for trial in range(5):
        y = rng.random(n) < 0.4
        for s in (rng.integers(0, 4, n).astype(float), rng.normal(size=n)):  # heavy ties, and none
            s[rng.random(n) < 0.1] = np.nan
            a, b = auroc(s, y), _auroc_by_ranks(s, y)
            assert a == b or (np.isnan(a) and np.isnan(b))
            r, q = spearman(s, y), _spearman_by_pandas(s, y)
            assert (np.isnan(r) and np.isnan(q)) or abs(r - q) <= 1e-12, (r, q)
    assert np.isnan(spearman([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1]))  # a constant metric says nothing
    assert spearman([1.0, 2.0, 3.0, np.nan], [0, 1, 1, 0]) == pytest.approx(0.75 ** 0.5)  # ranks 1,2,3 vs 1,2.5,2.5


def _bootstrap_by_numpy(d, n_boot=2000, seed=0):
    """summary.paired's own bootstrap before it used scipy: resampled means, 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return tuple(float(v) for v in np.percentile(boots, [2.5, 97.5]))


def test_scipy_bootstrap_gives_the_former_interval():
    """The same seed draws the same resamples; the means may differ in the last bits (summation order)."""
    import warnings

    from qualmet.stats import bootstrap_ci

    for n in (2, 3, 5, 12):
        for seed in range(4):
            d = np.random.default_rng(100 * n + seed).normal(0.01, 0.02, n)
            np.testing.assert_allclose(bootstrap_ci(d, seed=seed), _bootstrap_by_numpy(d, seed=seed), rtol=0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # equal differences on every seed: a zero-width interval, no warning
        assert bootstrap_ci(np.full(3, 0.02)) == pytest.approx((0.02, 0.02))
