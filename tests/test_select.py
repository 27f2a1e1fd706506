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


# --- common random numbers, count-matched budgets, frame scores and NaN (issue 21 items 2, 3, 5)

def crowded_tables(n_frames: int = 60):
    """Frame i holds 1 + i % 4 boxes; 'tight' (worse low) is 0.2 on every box of frames i % 4 == 3
    (the crowded ones: 4 boxes) and 0.9 elsewhere, so a filter on it drops exactly the crowded frames."""
    rows, aid = [], 0
    for i in range(1, n_frames + 1):
        for _ in range(1 + i % 4):
            aid += 1
            rows.append({"annotation_id": aid, "image_id": i, "tight": 0.2 if i % 4 == 3 else 0.9})
    return pd.DataFrame(rows), pd.DataFrame({"image_id": range(1, n_frames + 1)}), list(range(1, n_frames + 1))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_an_arm_that_drops_nothing_selects_exactly_randoms_frames(seed):
    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    rand = select(run, ids, Strategy("random"), 12, seed=seed).image_ids
    nothing = Strategy("filter", metric="tight", method="threshold", threshold=-1.0)  # no box below -1
    assert select(run, ids, nothing, 12, seed=seed).image_ids == rand
    assert select(run, ids, Strategy("filter", metric="tight", method="threshold", threshold=-1.0, match="boxes"),
                  12, seed=seed).image_ids == rand
    assert select(run, ids, Strategy("oracle_filter"), 12, seed=seed, error_frames=[]).image_ids == rand
    for kind in ("clean", "oracle_remove"):
        assert select(run, ids, Strategy(kind), 12, seed=seed).image_ids == rand


def test_a_filter_walks_randoms_permutation_skipping_what_it_drops():
    """The filter keeps every random frame it does not drop and fills up with the next frames of the
    same permutation: it differs from random only where it had to."""
    from qualmet.select import permutation

    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    for seed in range(10):
        perm = permutation(ids, seed)
        walk = [i for i in perm if i not in {1, 2, 3, 4}][:12]
        sel = select(run, ids, Strategy("filter", metric="tight", method="threshold", threshold=0.5), 12, seed=seed)
        assert sel.image_ids == sorted(walk)
        rand = set(perm[:12].tolist())
        assert rand - {1, 2, 3, 4} <= set(sel.image_ids)


@pytest.mark.parametrize("seed", range(6))
def test_boxes_matched_filter_reaches_randoms_box_count_within_one_frame(seed):
    o, f, ids = crowded_tables()
    run = MetricRun.from_tables(o, f, {"tight": "low"})
    per_frame = o.groupby("image_id").size()
    rand = select(run, ids, Strategy("random"), 20, seed=seed).image_ids
    target = int(per_frame.loc[rand].sum())
    by_frames = select(run, ids, Strategy("filter", metric="tight", method="threshold", threshold=0.5), 20, seed=seed)
    by_boxes = select(run, ids, Strategy("filter", metric="tight", method="threshold", threshold=0.5, match="boxes"),
                      20, seed=seed)
    assert not any(i % 4 == 3 for i in by_boxes.image_ids)  # the crowded frames are dropped either way
    got = int(per_frame.loc[by_boxes.image_ids].sum())
    assert by_boxes.target_boxes == target
    assert got >= target and got - target < per_frame.max()  # reached, overshooting by less than one frame
    assert len(by_boxes.image_ids) > len(by_frames.image_ids)  # it needed more (lighter) frames to get there
    assert set(by_frames.image_ids) <= set(by_boxes.image_ids)  # the same walk, just longer


def test_boxes_match_that_cannot_be_met_says_so():
    o, f, ids = crowded_tables(20)
    run = MetricRun.from_tables(o, f, {"tight": "low"})
    with pytest.raises(QualmetError, match="fewer than random's"):
        select(run, ids, Strategy("filter", metric="tight", method="threshold", threshold=0.5, match="boxes"), 18, seed=0)


def test_frame_score_max_mean_and_sum_rank_frames_differently():
    """Frame 1: one bad box among four good ones; frame 2: one box, fairly bad; frame 3: three middling
    boxes. max calls 1 the worst, mean 2, sum 3; rank keeps the other four."""
    o = pd.DataFrame({"annotation_id": range(1, 12), "image_id": [1] * 5 + [2] + [3] * 3 + [4, 5],
                      "p": [1.0, 0, 0, 0, 0, 0.6, 0.5, 0.5, 0.55, 0.1, 0.1]})
    run = MetricRun.from_tables(o, pd.DataFrame({"image_id": [1, 2, 3, 4, 5]}), {"p": "high"})
    ids = [1, 2, 3, 4, 5]
    left_out = {how: set(ids) - set(select(run, ids, Strategy("rank", metric="p", frame_score=how), 4, seed=0).image_ids)
                for how in ("max", "mean", "sum")}
    assert left_out == {"max": {1}, "mean": {2}, "sum": {3}}
    flt = select(run, ids, Strategy("filter", metric="p", method="percentile", percentile=20, frame_score="sum"), 4, seed=0)
    assert flt.image_ids == [1, 2, 4, 5]  # the top 20% of frame sums is frame 3 alone


def test_nan_is_neutral_in_ranking_and_combining():
    """A frame without a value ranks at the median: after the clean frames, before the suspicious ones."""
    o = pd.DataFrame({"annotation_id": range(1, 7), "image_id": [1, 2, 3, 4, 5, 6],
                      "tight": [0.9, 0.8, 0.7, 0.2, 0.1, np.nan]})
    f = pd.DataFrame({"image_id": [1, 2, 3, 4, 5, 6, 7]})  # frame 7: no boxes at all
    run = MetricRun.from_tables(o, f, {"tight": "low"})
    ids = list(range(1, 8))
    assert select(run, ids, Strategy("rank", metric="tight"), 2, seed=0).image_ids == [1, 2]
    five = select(run, ids, Strategy("rank", metric="tight"), 5, seed=0).image_ids
    assert set(five) == {1, 2, 3, 6, 7}  # the NaN frames (median) come before 4 and 5
    susp = combined_suspicion(MetricRun.from_tables(o, f.assign(c=[0, 0, 0, 1, 1, 0, 0]), {"tight": "low", "c": "high"}),
                              ("tight", "c"), pd.Index(ids))
    assert susp.loc[1] < susp.loc[7] < susp.loc[4]  # no value under 'tight': its middle rank, not its lowest
    flt = select(run, ids, Strategy("filter", metric="tight", method="percentile", percentile=40), 4, seed=0)
    assert {6, 7} & set(flt.reasons.loc[flt.reasons.reason.str.startswith("dropped"), "image_id"]) == set()


def test_stratify_samples_nan_frames_in_proportion_not_as_a_bin():
    """8 of 40 frames have no value: they get 8/40 of a 20-frame budget (4), the two bins 8 each;
    as a bin of their own they would have taken a third (6 or 7)."""
    o, f, ids = tables()
    f = f.assign(score=[np.nan if i <= 8 else float(i) for i in ids])
    run = MetricRun.from_tables(o, f, {"score": "high"})
    for seed in range(5):
        sel = select(run, ids, Strategy("stratify", metric="score", bins=2), 20, seed=seed)
        bins = sel.reasons.set_index("image_id").loc[sel.image_ids, "bin"].value_counts().to_dict()
        assert bins == {-1: 4, 0: 8, 1: 8}


def test_oracle_filter_needs_the_error_frames_and_skips_them():
    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    with pytest.raises(QualmetError, match="needs the frames with injected errors"):
        select(run, ids, Strategy("oracle_filter"), 10, seed=0)
    sel = select(run, ids, Strategy("oracle_filter"), 10, seed=0, error_frames=range(1, 21))
    assert len(sel.image_ids) == 10 and min(sel.image_ids) > 20


def test_match_and_frame_score_values_are_checked():
    with pytest.raises(QualmetError, match="match must be 'frames' or 'boxes'"):
        Strategy.from_dict({"strategy": "random", "match": "pixels"})
    with pytest.raises(QualmetError, match="frame_score must be max, mean or sum"):
        Strategy.from_dict({"strategy": "filter", "metric": "tight", "frame_score": "median"})


# --- review: frames ranked by the review queue (issue 27)

def _queue(ids, issues, worst) -> pd.DataFrame:
    """A review queue's frames table as qualmet.review.frame_ranking gives it (rows in any order)."""
    return pd.DataFrame({"image_id": ids, "issues": issues, "worst_box_score": worst}).sample(frac=1, random_state=5)


def test_review_takes_the_fewest_issues_then_the_lowest_worst_box_nan_at_the_median():
    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    issues = [0 if i % 3 == 0 else 1 + i % 2 for i in ids]  # 13 frames without an issue: 3, 6, ..., 39
    worst = [1 - i / 100 for i in ids]  # 0.60 .. 0.99: the later frame, the lower
    q = _queue(ids, issues, worst)
    assert select(run, ids, Strategy("review"), 7, seed=0, review_frames=q).image_ids == [21, 24, 27, 30, 33, 36, 39]
    q.loc[q.image_id == 39, "worst_box_score"] = np.nan  # the median of the other frames' worst, 0.80 (frame 20's)
    assert select(run, ids, Strategy("review"), 6, seed=0, review_frames=q).image_ids == [21, 24, 27, 30, 33, 36]
    assert select(run, ids, Strategy("review"), 7, seed=0, review_frames=q).image_ids == [21, 24, 27, 30, 33, 36, 39]
    sel = select(run, ids, Strategy("review"), 15, seed=0, review_frames=q)
    kept = q.set_index("image_id").loc[sel.image_ids, "issues"]
    assert (kept == 0).sum() == 13 and set(kept[kept > 0]) == {1}  # then the frames with one issue


@pytest.mark.parametrize("seed", [0, 3])
def test_a_review_queue_with_no_preference_selects_randoms_frames(seed):
    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    flat = _queue(ids, [1] * len(ids), [0.5] * len(ids))
    assert (select(run, ids, Strategy("review"), 12, seed=seed, review_frames=flat).image_ids
            == select(run, ids, Strategy("random"), 12, seed=seed).image_ids)


def test_review_without_the_queue_or_with_a_frame_missing_is_an_error():
    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    with pytest.raises(QualmetError, match="needs the review queue's frames table"):
        select(run, ids, Strategy("review"), 12, seed=0)
    q = _queue(ids, [0] * len(ids), [0.5] * len(ids))
    with pytest.raises(QualmetError, match="no row for 1 frame.*image id 17"):
        select(run, ids, Strategy("review"), 12, seed=0, review_frames=q[q.image_id != 17])


def test_ignore_annotations_flags_what_remove_annotations_drops_and_keeps_it_as_ignore_regions():
    from qualmet.dataset import Dataset

    o, f, ids = tables()
    run = MetricRun.from_tables(o, f, WORSE)
    by = {k: select(run, ids, Strategy(k, metric="dup", method="threshold", threshold=0.5), 40, seed=0)
          for k in ("remove_annotations", "ignore_annotations")}
    flagged = sorted(o.loc[o.dup > 0.5, "annotation_id"].tolist())
    assert by["ignore_annotations"].ignore_annotations == flagged == by["remove_annotations"].drop_annotations
    assert by["ignore_annotations"].image_ids == by["remove_annotations"].image_ids
    images = [{"id": int(i), "file_name": f"{i}.png", "width": 100, "height": 100} for i in ids]
    anns = [{"id": int(r.annotation_id), "image_id": int(r.image_id), "category_id": 1, "bbox": [1, 1, 10, 10],
             "area": 100.0, "iscrowd": 0} for r in o.itertuples()]
    ds = Dataset.from_records(images, anns, [{"id": 1, "name": "x"}])
    kept = by["ignore_annotations"].apply(ds).annotations
    gone = by["remove_annotations"].apply(ds).annotations
    chosen = set(by["remove_annotations"].image_ids)
    assert set(kept.image_id) <= chosen and len(kept) == int(o.image_id.isin(chosen).sum())
    assert sorted(kept.loc[kept.iscrowd == 1, "id"]) == [a for a in flagged if a in set(kept.id)]
    assert not set(gone.id) & set(flagged) and len(gone) == int((kept.iscrowd == 0).sum())
    assert ds.annotations.iscrowd.eq(0).all()  # the data set itself is left as it was
