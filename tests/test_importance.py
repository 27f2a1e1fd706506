"""Metric importance on constructed outcomes: a metric that decides 'found' carries the information."""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from qualmet.importance import importance_table, mutual_information


def test_a_deciding_metric_has_high_information_and_a_random_one_none():
    rng = np.random.default_rng(0)
    n = 400
    size = rng.uniform(0, 1, n)
    noise = rng.uniform(0, 1, n)
    found = size > 0.3  # the model finds big objects only
    objects = pd.DataFrame({"annotation_id": np.arange(n), "size": size, "noise": noise})
    flags = pd.DataFrame({"annotation_id": np.arange(n), "found": found})
    t = importance_table(objects, flags, ["size", "noise"]).set_index("metric")
    assert t.index[0] == "size"
    assert t.loc["size", "auroc_found"] == 1.0 and t.loc["size", "spearman"] > 0.7
    assert t.loc["size", "mutual_info_bits"] > 0.6 and t.loc["noise", "mutual_info_bits"] < 0.05
    assert abs(t.loc["noise", "auroc_found"] - 0.5) < 0.1


def test_mutual_information_of_a_copy_is_the_entropy_less_the_small_sample_bias():
    y = np.array([True, False] * 50)
    # two bins (equal values share one), two classes, n = 100: 1 bit less (2-1)(2-1) / (2 n ln 2)
    assert abs(mutual_information(y.astype(float), y) - (1.0 - 1 / (200 * np.log(2)))) < 1e-9


def test_mutual_information_does_not_depend_on_row_order_or_favour_small_samples():
    """Ties were split by row position: a constant metric beside 50 hits then 50 misses scored 1 bit,
    the maximum; and an unrelated metric scored ~0.5 bits on 15 objects."""
    y = np.array([True] * 50 + [False] * 50)
    assert mutual_information(np.ones(100), y) == 0.0
    rng = np.random.default_rng(1)
    v = rng.integers(0, 4, 200).astype(float)
    found = rng.random(200) < 0.4
    perm = rng.permutation(200)
    assert mutual_information(v, found) == pytest.approx(mutual_information(v[perm], found[perm]), abs=1e-12)
    for n, before in ((15, 0.48), (50, 0.11)):  # what the plain 8-bin estimate averaged on unrelated data
        unrelated = [mutual_information(rng.random(n), rng.random(n) < 0.5) for _ in range(200)]
        assert np.mean(unrelated) < before / 3, n


def test_importance_refuses_frame_and_prediction_metrics_before_running_the_model(tmp_path):
    from qualmet.errors import QualmetError
    from qualmet.importance import importance

    with pytest.raises(QualmetError, match="brightness, confidence is a frame metric or needs predictions"):
        importance(tmp_path / "no-model", tmp_path / "no-test.json", tmp_path / "out",
                   metrics=["aspect_ratio", "brightness", "confidence"])
    assert not (tmp_path / "out").exists()


def test_values_just_above_a_mass_of_equal_values_keep_their_own_bin():
    """31 boxes at 0 (none found) and 9 at 1..9 (all found): v > 0 decides. Quantile edges merged 1-4
    into the zero bin (0.30 bits); the outcome's entropy is 0.77 bits."""
    v = np.r_[np.zeros(31), np.arange(1, 10)]
    y = v > 0
    p = y.mean()
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert mutual_information(v, y) > h - 0.05
