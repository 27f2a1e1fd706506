"""Selection strategies on hand-built metric tables: the expected ids, and exactly the budget."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qualmet.errors import QualmetError
from qualmet.metric_run import MetricRun
from qualmet.select import Strategy, combined_suspicion, resolve_budget, select

WORSE = {"tight": "low", "dup": "high", "count": "high", "odd": "high"}


def tables(n_frames: int = 40):
    """Frame i has two objects; 'tight' is 0.9 except frames 0-3 (one box at 0.1: loose);
    'dup' is 0 except frames 4-5 (one box at 0.95: duplicate); 'count' per frame is i % 5."""
    rows, aid = [], 0
    for i in range(1, n_frames + 1):
        for j in range(2):
            aid += 1
            tight = 0.1 if (i <= 4 and j == 0) else 0.9 - 0.001 * i
            dup = 0.95 if (i in (5, 6) and j == 1) else 0.0
            rows.append({"annotation_id": aid, "image_id": i, "tight": tight, "dup": dup})
    objects = pd.DataFrame(rows)
    frames = pd.DataFrame({"image_id": range(1, n_frames + 1), "count": [i % 5 for i in range(1, n_frames + 1)]})
    return objects, frames, list(range(1, n_frames + 1))


def test_budget_resolution():
    assert resolve_budget(40, 0.25) == 10
    assert resolve_budget(40, 7) == 7
    with pytest.raises(QualmetError, match="exceeds"):
        resolve_budget(40, 41)
    with pytest.raises(QualmetError, match="budget must be"):
        resolve_budget(40, 0)


def test_random_is_seeded_and_meets_the_budget():
    o, f, ids = tables()
    a = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("random"), 0.25, seed=3)
    b = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("random"), 0.25, seed=3)
    c = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("random"), 0.25, seed=4)
    assert a.image_ids == b.image_ids != c.image_ids
    assert len(a.image_ids) == 10 and len(set(a.image_ids)) == 10
    assert a.reasons.kept.sum() == 10 and len(a.reasons) == 40


@pytest.mark.parametrize("method,extra", [("iqr", {}), ("percentile", {"percentile": 5}), ("threshold", {"threshold": 0.5})])
def test_filter_never_keeps_a_frame_it_should_drop(method, extra):
    o, f, ids = tables()
    for seed in range(20):
        sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("filter", metric="tight", method=method, **extra), 30, seed=seed)
        assert len(sel.image_ids) == 30
        assert not set(sel.image_ids) & {1, 2, 3, 4}
    r = sel.reasons.set_index("image_id")
    assert all(r.loc[i, "reason"].startswith("dropped: tight suspicious") for i in (1, 2, 3, 4))
    assert not r.loc[[1, 2, 3, 4], "kept"].any()


def test_filter_uses_the_worse_side():
    o, f, ids = tables()
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("filter", metric="dup", method="threshold", threshold=0.5), 30, seed=0)
    assert not set(sel.image_ids) & {5, 6}


def test_filter_says_why_the_budget_cannot_be_met():
    o, f, ids = tables()
    with pytest.raises(QualmetError, match="only 36 remain for a budget of 37"):
        select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("filter", metric="tight", method="threshold", threshold=0.5), 37, seed=0)


def test_rank_takes_the_least_suspicious_frames():
    o, f, ids = tables()
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("rank", metric="tight"), 5, seed=0)
    # tight is 0.9 - 0.001*i: higher is better, so the least suspicious are the lowest ids after the 4 loose frames
    assert sel.image_ids == [5, 6, 7, 8, 9]
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("rank", metric="count"), 8, seed=0)
    assert sorted(f.set_index("image_id").loc[sel.image_ids, "count"]) == [0] * 8


def test_stratify_takes_an_equal_share_from_each_bin():
    o, f, ids = tables()
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("stratify", metric="count", bins=4), 12, seed=1)
    assert len(sel.image_ids) == 12
    bins = sel.reasons.set_index("image_id").loc[sel.image_ids, "bin"]
    assert sorted(bins.value_counts().tolist()) == [3, 3, 3, 3]


def test_combined_ranks_average_over_metrics_and_drop_the_top():
    o, f, ids = tables()
    o.loc[o.tight > 0.5, "tight"] = 0.9  # ties everywhere but the planted errors
    susp = combined_suspicion(MetricRun.from_tables(o, f, WORSE), ("tight", "dup"), pd.Index(ids))
    top = susp.sort_values(ascending=False).index[:6]
    assert set(top) == {1, 2, 3, 4, 5, 6}
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("combined", metrics=("tight", "dup"), percentile=15), 20, seed=0)
    assert len(sel.image_ids) == 20 and not set(sel.image_ids) & {1, 2, 3, 4, 5, 6}


def test_remove_annotations_keeps_the_random_frames_and_drops_only_suspicious_boxes():
    o, f, ids = tables()
    base = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("random"), 40, seed=0)
    sel = select(MetricRun.from_tables(o, f, WORSE), ids,
                 Strategy("remove_annotations", metric="dup", method="threshold", threshold=0.5), 40, seed=0)
    assert sel.image_ids == base.image_ids
    assert sel.drop_annotations == sorted(o.loc[o.dup > 0.5, "annotation_id"].tolist())


def test_relabel_marks_the_worst_box_of_the_most_suspicious_frames():
    o, f, ids = tables()
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("relabel", metric="tight", k=4), 40, seed=0)
    assert len(sel.image_ids) == 40
    marked = set(sel.reasons.loc[sel.reasons.reason.str.contains("relabel"), "image_id"])
    assert marked == {1, 2, 3, 4}
    assert sel.relabel_annotations == sorted(o.loc[o.tight < 0.5, "annotation_id"].tolist())


def test_strategy_specs_are_checked():
    with pytest.raises(QualmetError, match="needs a 'metric'"):
        Strategy.from_dict({"strategy": "filter"})
    with pytest.raises(QualmetError, match="unknown strategy"):
        Strategy.from_dict({"strategy": "magic"})
    with pytest.raises(QualmetError, match="unknown field"):
        Strategy.from_dict({"strategy": "random", "colour": "red"})
    s = Strategy.from_dict({"strategy": "combined", "metrics": ["a", "b"], "name": "c"})
    assert s.metrics == ("a", "b")
    with pytest.raises(QualmetError, match="is not in the metrics run"):
        o, f, ids = tables()
        select(MetricRun.from_tables(o, f, {"nope": "high"}), ids, Strategy("rank", metric="nope"), 5, seed=0)


@pytest.mark.parametrize("fields,words", [
    ({"percentile": 150}, r"percentile must be in \(0, 100\]"), ({"percentile": 0}, r"percentile must be in"),
    ({"bins": 0}, "bins must be at least 1"), ({"k": -1}, r"k \(frames to relabel\) must be at least 1"),
    ({"iqr_k": -1}, "iqr_k must not be negative"),
])
def test_strategy_values_out_of_range_are_errors(fields, words):
    with pytest.raises(QualmetError, match=words):
        Strategy.from_dict({"strategy": "filter", "metric": "tight", **fields})


def test_rank_breaks_ties_by_seed_whatever_the_scale():
    """Equal suspicion (here every frame, at a large value, and NaN frames) is ordered by the seed."""
    o, f, ids = tables()
    f = f.assign(big=1e5)
    picks = {tuple(select(MetricRun.from_tables(o, f, {"big": "high"}), ids, Strategy("rank", metric="big"), 5, seed=s).image_ids)
             for s in range(4)}
    assert len(picks) > 1
    f = f.assign(gone=np.nan)
    picks = {tuple(select(MetricRun.from_tables(o, f, {"gone": "high"}), ids, Strategy("rank", metric="gone"), 5, seed=s).image_ids)
             for s in range(4)}
    assert len(picks) > 1
    same = select(MetricRun.from_tables(o, f, {"big": "high"}), ids, Strategy("rank", metric="big"), 5, seed=2).image_ids
    assert same == select(MetricRun.from_tables(o, f, {"big": "high"}), ids, Strategy("rank", metric="big"), 5, seed=2).image_ids


def test_relabel_with_frames_whose_metric_is_nan():
    """A frame picked for relabelling whose boxes are all NaN under the metric has no 'worst box'
    (it used to crash idxmax); the frame is still listed."""
    o, f, ids = tables()
    o.loc[o.image_id <= 20, "dup"] = np.nan
    sel = select(MetricRun.from_tables(o, f, WORSE), ids, Strategy("relabel", metric="dup", k=20), 20, seed=0)
    assert len(sel.relabel_images) == 20 and min(sel.relabel_images) <= 20  # NaN frames among them
    boxes_in = set(o.loc[o.annotation_id.isin(sel.relabel_annotations), "image_id"])
    assert boxes_in <= {i for i in sel.relabel_images if i > 20}
