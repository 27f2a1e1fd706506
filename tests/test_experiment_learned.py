"""Learned arms on hand-built metric tables: the combiner fitted on verified frames recovers a planted
signal, the verified frames are charged to the budget and train with their clean labels, and specs
that cannot work fail before any data is made."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qualmet.dataset import Dataset
from qualmet.errors import QualmetError
from qualmet.experiment import load_spec
from qualmet.experiment.arms import _select_and_build, known_wrong
from qualmet.experiment.data import Replicate
from qualmet.experiment.learned import LEARNED, learned_run
from qualmet.metric_run import MetricRun
from qualmet.select import Strategy
from qualmet.stats import auroc

CATS = [{"id": 1, "name": "panda"}]
SIGNAL, NOISE = "box_tightness_iou", "aspect_ratio"  # registered names, so a spec can name them

SPEC = f"""name = "learned"
budget = 0.25
seeds = [0]
[data]
source = "synthetic"
train = 80
[noise]
rate = 0.3
[[arms]]
name = "random"
strategy = "random"
[[arms]]
name = "learned"
strategy = "filter"
metric = "learned"
method = "percentile"
percentile = 20
verified = 8
learn_from = ["{SIGNAL}", "{NOISE}"]
"""


@pytest.fixture(scope="module")
def planted():
    """80 frames of 3 boxes; a quarter of the boxes moved (wrong). SIGNAL's suspicion (low IoU is
    worse) separates them, NOISE's does not."""
    rng = np.random.default_rng(4)
    images = [{"id": i, "file_name": f"f{i}.png", "width": 200, "height": 200} for i in range(1, 81)]
    clean_anns, noisy_anns, rows = [], [], []
    for i in range(1, 81):
        for j in range(3):
            aid = (i - 1) * 3 + j + 1
            box = [10.0 + 50 * j, 20.0, 30.0, 40.0]
            wrong = rng.random() < 0.25
            clean_anns.append({"id": aid, "image_id": i, "category_id": 1, "bbox": box, "area": 1200.0, "iscrowd": 0})
            moved = [box[0] + 9, box[1] + 7, box[2], box[3]] if wrong else box
            noisy_anns.append({"id": aid, "image_id": i, "category_id": 1, "bbox": moved, "area": 1200.0, "iscrowd": 0})
            rows.append({"annotation_id": aid, "image_id": i, "category_id": 1, "wrong": wrong,
                         SIGNAL: rng.normal(0.45 if wrong else 0.8, 0.08), NOISE: rng.normal(1.0, 0.2)})
    objects = pd.DataFrame(rows)
    run = MetricRun.from_tables(objects.drop(columns="wrong"), pd.DataFrame({"image_id": range(1, 81)}),
                                {SIGNAL: "low", NOISE: "high"})
    clean = Dataset.from_records(images, clean_anns, CATS)
    noisy = Dataset.from_records(images, noisy_anns, CATS)
    manifest = pd.DataFrame({"annotation_id": objects.loc[objects.wrong, "annotation_id"],
                             "image_id": objects.loc[objects.wrong, "image_id"], "type": "shifted"})
    rep = Replicate(None, 0, noisy, clean, clean.subset([]), manifest, run)
    return rep, objects


def test_the_combiner_fitted_on_verified_frames_recovers_the_planted_signal(planted):
    rep, objects = planted
    arm = {"name": "learned", "verified": 8, "learn_from": [SIGNAL, NOISE]}
    run, verified = learned_run(rep.run, rep.noisy, rep.clean, arm, seed=0)
    assert len(verified.image_ids) == 8 and verified.n_boxes == 24
    assert verified.n_wrong == int(objects[objects.image_id.isin(verified.image_ids)].wrong.sum()) > 0
    assert verified.weights[SIGNAL] > 4 * abs(verified.weights[NOISE])  # the planted metric carries the model
    rest = ~objects.image_id.isin(verified.image_ids)  # judged on boxes the fit never saw
    score = run.objects[LEARNED]
    assert auroc(score[rest], objects.wrong[rest]) > 0.95
    assert abs(auroc(objects[NOISE][rest], objects.wrong[rest]) - 0.5) < 0.15
    assert run.spec(LEARNED).worse == "high" and run.spec(SIGNAL).worse == "low"
    again, _ = learned_run(rep.run, rep.noisy, rep.clean, arm, seed=0)
    assert again.objects[LEARNED].equals(score)  # seeded
    other, v1 = learned_run(rep.run, rep.noisy, rep.clean, arm, seed=1)
    assert v1.image_ids != verified.image_ids


def test_verified_frames_are_charged_to_the_budget_and_train_with_clean_labels(planted, tmp_path):
    rep, objects = planted
    (tmp_path / "s.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.toml")
    arm = spec.arms[1]
    sel, subset, verified = _select_and_build(spec, arm, Strategy.from_dict(arm), 0, rep)
    assert len(sel.image_ids) == len(subset.images) == 20  # random's 25% of 80: 8 verified + 12 selected
    assert set(verified.image_ids) <= set(sel.image_ids)
    v = subset.annotations[subset.annotations.image_id.isin(verified.image_ids)]
    assert len(v) == 24 and known_wrong(subset.subset(verified.image_ids), rep) == 0
    picked = [i for i in sel.image_ids if i not in verified.image_ids]
    wrong_rate = objects[objects.image_id.isin(picked)].wrong.mean()
    assert wrong_rate < objects.wrong.mean() / 2  # the learned filter left most wrong boxes out
    assert subset.annotations["id"].is_unique
    reasons = sel.reasons.set_index("image_id")
    assert (reasons.loc[verified.image_ids, "reason"] == "verified (clean labels)").all()


@pytest.mark.parametrize("change, words", [
    ({"verified": None}, "needs 'verified', a number of frames >= 1"),
    ({"learn_from": None}, "needs 'learn_from', a list of object metrics"),
    ({"metric": "box_tightness_iou"}, 'ranks by metric = "learned"'),
    ({"learn_from": ["no_such_metric"]}, "unknown metric"),
])
def test_learned_arm_spec_errors(tmp_path, change, words):
    text = SPEC
    for k, v in change.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{k} ="))
        text = text.replace(line + "\n", "" if v is None else f"{k} = {v!r}\n".replace("'", '"'))
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(QualmetError, match=words):
        load_spec(tmp_path / "s.toml")


def test_a_learned_arm_needs_injected_noise(tmp_path):
    (tmp_path / "s.toml").write_text(SPEC.replace("rate = 0.3", "rate = 0.0"))
    with pytest.raises(QualmetError, match="learned arm needs injected noise"):
        load_spec(tmp_path / "s.toml")


def test_errors_table_scores_the_learned_row_on_frames_it_was_not_fitted_on(planted):
    from qualmet.label_errors import learned_table

    rep, objects = planted
    table, frames = learned_table(rep.run, rep.manifest, 10, seed=2)
    assert len(frames) == 10
    rows = table.set_index(["metric", "type"])
    n_rest = int((~objects.image_id.isin(frames)).sum())
    assert rows.loc[("learned", "any"), "n"] == rows.loc[(NOISE, "any"), "n"] == n_rest  # the same boxes for every row
    assert rows.loc[("learned", "any"), "auroc"] > 0.95 > rows.loc[(NOISE, "any"), "auroc"]
    assert rows.loc[("learned", "any"), "positives"] == int(objects[~objects.image_id.isin(frames)].wrong.sum())


def test_learned_remove_drops_mostly_wrong_boxes_from_randoms_frames(planted, tmp_path):
    rep, objects = planted
    arm = {"name": "learned:remove", "strategy": "remove_annotations", "metric": "learned", "method": "percentile",
           "percentile": 25, "verified": 8, "learn_from": [SIGNAL, NOISE]}
    (tmp_path / "s.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.toml")
    sel, subset, verified = _select_and_build(spec, arm, Strategy.from_dict(arm), 0, rep)
    assert len(subset.images) == 20 and sel.drop_annotations
    picked = objects[objects.image_id.isin(sel.image_ids) & ~objects.image_id.isin(verified.image_ids)]
    assert len(sel.drop_annotations) == int(np.ceil(0.25 * len(picked)))  # the 25% most suspicious boxes
    assert picked.wrong.any() and set(picked.loc[picked.wrong, "annotation_id"]) <= set(sel.drop_annotations)
    assert not set(sel.drop_annotations) & set(subset.annotations["id"])


def test_learned_ignore_keeps_the_flagged_boxes_as_ignore_regions(planted, tmp_path):
    rep, objects = planted
    (tmp_path / "s.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.toml")
    made = {}
    for kind in ("remove_annotations", "ignore_annotations"):
        arm = {"name": kind, "strategy": kind, "metric": "learned", "method": "percentile", "percentile": 25,
               "verified": 8, "learn_from": [SIGNAL, NOISE]}
        made[kind] = _select_and_build(spec, arm, Strategy.from_dict(arm), 0, rep)
    (rm_sel, rm_sub, _), (ig_sel, ig_sub, _) = made["remove_annotations"], made["ignore_annotations"]
    assert ig_sel.image_ids == rm_sel.image_ids and ig_sel.ignore_annotations == rm_sel.drop_annotations
    anns = ig_sub.annotations.set_index("id")
    # the same frames and every box of them, the flagged ones as ignore regions and nothing else changed
    assert len(anns) == len(rm_sub.annotations) + len(rm_sel.drop_annotations)
    assert set(anns.index[anns.iscrowd == 1]) == set(ig_sel.ignore_annotations)
    # the ignored boxes are mostly the wrong ones: the boxes it trains on hold the same wrong ones as remove's
    assert known_wrong(ig_sub, rep) == known_wrong(rm_sub, rep) < known_wrong(rep.noisy.subset(ig_sel.image_ids), rep)
