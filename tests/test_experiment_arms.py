"""Anchor arms, noise draws per seed and spec checks, on a small synthetic set with real noise and
real metrics, without training a detector (the training runs are in test_experiment.py)."""
from __future__ import annotations

import numpy as np
import pytest

from qualmet.errors import QualmetError
from qualmet.experiment import load_spec
from qualmet.experiment.arms import build_subset, known_wrong
from qualmet.experiment.truth import oracle_remove
from qualmet.experiment.data import prepare_clean, replicate
from qualmet.formats import load_coco
from qualmet.select import Strategy, select

SPEC = """name = "draws"
budget = 0.25
seeds = [0, 1]
[data]
source = "synthetic"
train = 40
test = 4
size = 128
seed = 3
[noise]
rate = 0.3
seed = 10
vary = true
[detector]
recipe = "ssdlite256"
iters = 4
input_size = 128
[[arms]]
name = "random"
strategy = "random"
[[arms]]
name = "clean"
strategy = "clean"
[[arms]]
name = "oracle_remove"
strategy = "oracle_remove"
[[arms]]
name = "oracle_filter"
strategy = "oracle_filter"
match = "boxes"
[[arms]]
name = "filter:box_tightness_iou"
strategy = "filter"
metric = "box_tightness_iou"
method = "percentile"
percentile = 30
match = "boxes"
"""


@pytest.fixture(scope="module")
def draws(tmp_path_factory):
    root = tmp_path_factory.mktemp("draws")
    (root / "s.toml").write_text(SPEC)
    spec = load_spec(root / "s.toml")
    out = root / "out"
    clean_json, test_json = prepare_clean(spec, out)
    test = load_coco(test_json)
    reps = {s: replicate(spec, out, s, clean_json, test, workers=1, progress=False) for s in spec.seeds}
    return spec, out, clean_json, test, reps


def test_each_seed_draws_its_own_noise_and_a_rerun_reuses_it(draws):
    spec, out, clean_json, test, reps = draws
    assert [reps[s].noise_seed for s in (0, 1)] == [10, 11]
    m0, m1 = (reps[s].manifest for s in (0, 1))
    assert len(m0) == len(m1) > 0 and not m0[["annotation_id", "type"]].equals(m1[["annotation_id", "type"]])
    for s in (0, 1):
        d = out / "draws" / f"seed{s}"
        assert (d / "train_noisy.json").is_file() and (d / "metrics" / "objects.parquet").is_file()
        assert (d / "label_errors" / "label_errors.csv").is_file()
    assert (out / "label_errors" / "label_errors.csv").is_file()  # the first seed's, for the report
    noisy = out / "draws" / "seed1" / "train_noisy.json"
    before = noisy.stat().st_mtime_ns
    again = replicate(spec, out, 1, clean_json, test, workers=1, progress=False)
    assert noisy.stat().st_mtime_ns == before  # the step was done: not drawn again
    assert again.manifest.equals(reps[1].manifest)


def _select(rep, spec, name, seed=0):
    arm = next(a for a in spec.arms if a["name"] == name)
    s = Strategy.from_dict(arm)
    sel = select(rep.run, rep.noisy.images["id"], s, spec.raw["budget"], seed, error_frames=rep.error_frames)
    return sel, build_subset(arm, s, sel, rep)


def test_clean_arm_trains_randoms_frames_with_their_clean_labels(draws):
    spec, _, _, _, reps = draws
    rep = reps[0]
    rsel, rsub = _select(rep, spec, "random")
    csel, csub = _select(rep, spec, "clean")
    assert csel.image_ids == rsel.image_ids
    want = rep.clean.annotations[rep.clean.annotations.image_id.isin(rsel.image_ids)]
    assert sorted(csub.annotations["id"]) == sorted(want["id"]) and known_wrong(csub, rep) == 0
    in_frames = rep.manifest[rep.manifest.image_id.isin(rsel.image_ids)]
    assert known_wrong(rsub, rep) == (in_frames.type != "missing").sum() > 0


def test_oracle_remove_drops_exactly_the_wrong_boxes_and_keeps_their_objects_as_ignore_regions(draws):
    spec, _, _, _, reps = draws
    rep = reps[1]
    rsel, _ = _select(rep, spec, "random", seed=1)
    osel, sub = _select(rep, spec, "oracle_remove", seed=1)
    assert osel.image_ids == rsel.image_ids
    man = rep.manifest[rep.manifest.image_id.isin(rsel.image_ids)]
    ann = sub.annotations
    crowd, boxes = ann[ann.iscrowd == 1], ann[ann.iscrowd == 0]
    unlabelled = man[man.type.isin(["loose", "shift", "squash", "missing", "wrong_class"])]
    assert sorted(crowd["id"]) == sorted(unlabelled["annotation_id"].astype(int))  # each lost object, once
    assert not set(boxes["id"]) & set(man["annotation_id"].astype(int))  # no box the manifest touched
    clean = rep.clean.annotations.set_index("id")
    for c in ("x", "y", "w", "h", "category_id"):  # ignore regions sit at the true box; kept boxes are true
        assert np.allclose(crowd.set_index("id")[c], clean.loc[crowd["id"], c])
        assert np.allclose(boxes.set_index("id")[c], clean.loc[boxes["id"], c])
    assert known_wrong(sub, rep) == 0
    same = oracle_remove(rep.clean.subset(rsel.image_ids), rep.clean.subset(rsel.image_ids))
    assert (same.annotations.iscrowd == 0).all()  # nothing wrong: nothing removed


def test_oracle_filter_and_filter_arms_are_box_matched_to_random(draws):
    spec, _, _, _, reps = draws
    rep = reps[0]
    per_frame = rep.noisy.annotations.groupby("image_id").size().reindex(rep.noisy.images["id"], fill_value=0)
    rsel, _ = _select(rep, spec, "random")
    target = int(per_frame.loc[rsel.image_ids].sum())
    for name in ("oracle_filter", "filter:box_tightness_iou"):
        sel, sub = _select(rep, spec, name)
        got = int(per_frame.loc[sel.image_ids].sum())
        assert sel.target_boxes == target and target <= got < target + per_frame.max(), name
    sel, sub = _select(rep, spec, "oracle_filter")
    assert not set(sel.image_ids) & rep.error_frames and known_wrong(sub, rep) == 0


@pytest.mark.parametrize("extra,words", [
    ('[noise]\nrate = 0.3\nvary = "yes"\n', r"\[noise\] vary must be true or false"),
    ('[noise]\nrate = 0.0\n[[arms]]\nname = "clean"\nstrategy = "clean"\n',
     r"arm 'clean': an anchor, oracle or learned arm needs injected noise"),
    ('contrasts = ["nope"]\n', r"contrasts\[0\] names unknown arm 'nope'"),
    ('[[arms]]\nname = "f"\nstrategy = "filter"\nmetric = "aspect_ratio"\nmatch = "pixels"\n',
     r"arm 'f': match must be 'frames' or 'boxes'"),
])
def test_spec_errors_name_the_file_and_the_field(tmp_path, extra, words):
    p = tmp_path / "bad.toml"
    head, _, tail = extra.partition("[[arms]]")
    p.write_text(head + '[[arms]]\nname = "random"\nstrategy = "random"\n' + ("[[arms]]" + tail if tail else ""))
    with pytest.raises(QualmetError, match=words) as e:
        load_spec(p)
    assert str(p) in str(e.value)


def test_select_command_refuses_anchor_strategies(tmp_path, capsys):
    from qualmet.cli import main

    assert main(["select", str(tmp_path / "a.json"), "--run", str(tmp_path / "run"), "--strategy", "oracle_filter",
                 "--out", str(tmp_path / "sel")]) == 2
    assert "--strategy oracle_filter: an anchor arm reads a noise manifest" in capsys.readouterr().err


def test_select_command_matches_boxes(draws, tmp_path):
    """--match boxes through the CLI: the subset holds at least random's boxes, within one frame."""
    import json

    from qualmet.cli import main

    spec, out, _, _, reps = draws
    d = out / "draws" / "seed0"
    sets = {}
    for match in ("frames", "boxes"):
        assert main(["select", str(d / "train_noisy.json"), "--run", str(d / "metrics"), "--strategy", "filter",
                     "--metric", "box_tightness_iou", "--method", "percentile", "--percentile", "30", "--match", match,
                     "--budget", "10", "--seed", "0", "--out", str(tmp_path / match)]) == 0
        sets[match] = json.loads((tmp_path / match / "subset.json").read_text())
    assert main(["select", str(d / "train_noisy.json"), "--run", str(d / "metrics"), "--budget", "10", "--seed", "0",
                 "--out", str(tmp_path / "random")]) == 0
    rand = json.loads((tmp_path / "random" / "subset.json").read_text())
    per_frame = reps[0].noisy.annotations.groupby("image_id").size()
    assert len(sets["frames"]["images"]) == 10
    assert len(rand["annotations"]) <= len(sets["boxes"]["annotations"]) < len(rand["annotations"]) + per_frame.max()


def test_a_spec_of_random_and_clean_needs_no_metrics_run(tmp_path):
    """The headroom pilot's arms rank by nothing: no metrics are computed (there are none to run), and
    random and clean still select the same frames from the boxes per frame."""
    p = tmp_path / "pilot.toml"
    p.write_text(SPEC.split("[[arms]]")[0] + '[[arms]]\nname = "random"\nstrategy = "random"\n'
                 '[[arms]]\nname = "clean"\nstrategy = "clean"\n')
    spec = load_spec(p)
    assert spec.metrics_needed() == []
    clean_json, test_json = prepare_clean(spec, tmp_path / "out")
    rep = replicate(spec, tmp_path / "out", 1, clean_json, load_coco(test_json), workers=1, progress=False)
    assert rep.noise_seed == 11 and not (tmp_path / "out" / "draws" / "seed1" / "metrics").exists()
    rsel, _ = _select(rep, spec, "random", seed=1)
    csel, csub = _select(rep, spec, "clean", seed=1)
    assert csel.image_ids == rsel.image_ids and known_wrong(csub, rep) == 0
