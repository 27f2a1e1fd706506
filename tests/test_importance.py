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


def test_mutual_information_of_a_copy_is_the_entropy():
    y = np.array([True, False] * 50)
    assert abs(mutual_information(y.astype(float), y) - 1.0) < 1e-9


def test_importance_refuses_frame_and_prediction_metrics_before_running_the_model(tmp_path):
    from qualmet.errors import QualmetError
    from qualmet.importance import importance

    with pytest.raises(QualmetError, match="brightness, confidence is a frame metric or needs predictions"):
        importance(tmp_path / "no-model", tmp_path / "no-test.json", tmp_path / "out",
                   metrics=["aspect_ratio", "brightness", "confidence"])
    assert not (tmp_path / "out").exists()
