"""Real label noise (BCCD): the data keys (train_list, images, test_images, [data.also_test]), the
ignore_predicted, pseudo_label and review arms and the per-test-set, per-class results, on a slice of the real
BCCD files (12 pool frames, 4 relabelled test frames) with a detector trained for a few iterations."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qualmet.boxes import iou_matrix
from qualmet.dataset import BOX_COLUMNS, Dataset
from qualmet.errors import QualmetError
from qualmet.experiment import load_spec, run_experiment
from qualmet.experiment.arms import add_predicted, unlabelled_predictions
from qualmet.experiment.data import prepare_clean
from qualmet.formats import load_coco, load_predictions
from qualmet.review import RULE_METRICS

from .conftest import SHARED

BCCD = SHARED / "datasets" / "bccd"
POOL = [f"BloodImage_{i:05d}" for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12)]
TEST = ["BloodImage_00167", "BloodImage_00169", "BloodImage_00171"]  # + the 4th relabelled frame below
SCORE = 0.05  # after 20 iterations hardly any prediction reaches 0.5


def _slice(root: Path, test_stems: list[str], also: dict[str, Path] | None = None, arms: str = "") -> Path:
    """A spec on the real BCCD files: POOL as the pool, ``test_stems``' relabelled XMLs as the test."""
    if not BCCD.is_dir():
        pytest.fail(f"the BCCD data set is expected at {BCCD} (../shared beside the repository)")
    (root / "test").mkdir(parents=True, exist_ok=True)
    for s in test_stems:
        shutil.copy(BCCD / "relabelled_test" / "annotations" / f"{s}.xml", root / "test")
    (root / "pool.txt").write_text("\n".join(POOL) + "\n")
    also = also if also is not None else {"original": BCCD / "annotations"}
    also_lines = "".join(f'{k} = "{v}"\n' for k, v in also.items())
    (root / "s.toml").write_text(f'''name = "bccd_slice"
budget = 0.5
seeds = [0, 1]
[data]
source = "{BCCD / 'annotations'}"
images = "{BCCD / 'images'}"
train_list = "pool.txt"
test_source = "test"
test_images = "{BCCD / 'images'}"
[data.also_test]
{also_lines}[noise]
rate = 0.0
[detector]
recipe = "ssdlite256"
iters = 20
input_size = 128
threads = 1
[predictions]
folds = 2
iters = 20
[[arms]]
name = "random"
strategy = "random"
[[arms]]
name = "all"
strategy = "random"
budget = 1.0
[[arms]]
name = "ignore_predicted"
strategy = "ignore_predicted"
score = {SCORE}
[[arms]]
name = "pseudo_label"
strategy = "pseudo_label"
score = {SCORE}
[[arms]]
name = "review"
strategy = "review"
match = "boxes"
{arms}''')
    return root / "s.toml"


def _test_stems() -> list[str]:
    rel = sorted(p.stem for p in (BCCD / "relabelled_test" / "annotations").glob("*.xml"))
    return TEST + [next(s for s in rel if s not in TEST)]


# -- the conversion, on a hand-made frame --------------------------------------------------------------------

def _labels() -> Dataset:
    return Dataset.from_records(
        [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}, {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100}],
        [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}],
        [{"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}])


def _preds() -> pd.DataFrame:
    rows = [(1, 2, [12, 12, 40, 40], 0.9),    # overlaps the label (other class): a labelled object, not added
            (1, 2, [120, 20, 30, 30], 0.8),   # confident, no label near: added
            (1, 1, [150, 60, 20, 20], 0.3),   # no label near but below the score: not added
            (1, 1, [30, 10, 40, 40], 0.7),    # IoU 1/3 with the label (< 0.5): added
            (3, 1, [0, 0, 10, 10], 0.99)]     # a frame not in the labels: not added
    return pd.DataFrame([{"id": k + 1, "image_id": i, "category_id": c, "x": b[0], "y": b[1], "w": b[2], "h": b[3],
                          "score": s} for k, (i, c, b, s) in enumerate(rows)])


def test_unlabelled_predictions_keep_only_confident_ones_no_label_overlaps():
    got = unlabelled_predictions(_labels(), _preds(), score=0.5, iou=0.5)
    assert sorted(got["id"]) == [2, 4]
    assert sorted(unlabelled_predictions(_labels(), _preds(), score=0.2, iou=0.5)["id"]) == [2, 3, 4]
    assert sorted(unlabelled_predictions(_labels(), _preds(), score=0.5, iou=0.3)["id"]) == [2]  # 1/3 >= 0.3


@pytest.mark.parametrize("ignore", [True, False])
def test_add_predicted_as_ignore_regions_or_boxes(ignore):
    out, n = add_predicted(_labels(), _preds(), score=0.5, iou=0.5, ignore=ignore)
    assert n == 2 and len(out.annotations) == 3
    a = out.annotations.sort_values("id")
    assert a["id"].is_unique and a.iloc[0]["id"] == 7 and int(a.iloc[0]["iscrowd"]) == 0  # the label unchanged
    new = a.iloc[1:]
    assert (new["iscrowd"] == (1 if ignore else 0)).all()
    assert new[BOX_COLUMNS].to_numpy().tolist() == [[120, 20, 30, 30], [30, 10, 40, 40]]
    assert new["category_id"].tolist() == [2, 1]  # the predicted class
    assert np.allclose(new["area"], [900, 1600])


def test_nothing_to_add_leaves_the_labels():
    out, n = add_predicted(_labels(), _preds().iloc[[0, 2]], ignore=True)
    assert n == 0 and out.annotations["id"].tolist() == [7]


# -- the data keys --------------------------------------------------------------------------------------------

def test_data_keys_make_the_pool_the_test_and_the_also_test_sets(tmp_path):
    spec = load_spec(_slice(tmp_path, _test_stems()))
    clean, test = prepare_clean(spec, tmp_path / "out")
    tr, te = load_coco(clean), load_coco(test)
    assert sorted(Path(f).stem for f in tr.images["file_name"]) == POOL
    assert sorted(Path(f).stem for f in te.images["file_name"]) == sorted(_test_stems())
    orig = load_coco(tmp_path / "out" / "data" / "test_original.json")
    assert orig.images[["id", "file_name"]].equals(te.images[["id", "file_name"]])  # the test's frames and ids
    assert tr.categories["name"].tolist() == orig.categories["name"].tolist() == ["Platelets", "RBC", "WBC"]
    assert len(orig.annotations) < len(te.annotations)  # the original labels miss cells the relabelling has
    assert Path(te.image_path(te.images["file_name"][0])).is_file()


def test_also_test_missing_a_test_frame_is_an_error_naming_it(tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    stems = _test_stems()
    for s in stems[:-1]:
        shutil.copy(BCCD / "annotations" / f"{s}.xml", short)
    spec = load_spec(_slice(tmp_path, stems, also={"original": short}))
    with pytest.raises(QualmetError, match=f"lacks 1 test frame.*{stems[-1]}"):
        prepare_clean(spec, tmp_path / "out")


def test_also_test_with_another_category_is_an_error_naming_it(tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    for s in _test_stems():
        text = (BCCD / "annotations" / f"{s}.xml").read_text()
        (odd / f"{s}.xml").write_text(text.replace("<name>WBC</name>", "<name>Neutrophil</name>"))
    spec = load_spec(_slice(tmp_path, _test_stems(), also={"original": odd}))
    with pytest.raises(QualmetError, match="Neutrophil"):
        prepare_clean(spec, tmp_path / "out")


@pytest.mark.parametrize("extra, words", [
    ('[[arms]]\nname = "x"\nstrategy = "random"\nbudget = 1.5\n', "budget"),
    ('[[arms]]\nname = "x"\nstrategy = "pseudo_label"\nscore = 2\n', "score"),
])
def test_arm_budget_and_score_are_checked(tmp_path, extra, words):
    with pytest.raises(QualmetError, match=words):
        load_spec(_slice(tmp_path, _test_stems(), arms=extra))


def test_unknown_data_keys_are_still_refused(tmp_path):
    p = _slice(tmp_path, _test_stems())
    p.write_text(p.read_text().replace("train_list =", "train_lst ="))
    with pytest.raises(QualmetError, match="unknown key.*train_lst"):
        load_spec(p)


def test_the_bccd_spec_loads():
    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / "bccd_real_noise.toml")
    assert spec.also_test == {"original": "../../shared/datasets/bccd/annotations"} and not spec.has_noise
    assert spec.arms_need_predictions() and set(spec.metrics_needed()) == {"missed_by_labels", "confidence",
                                                                        *RULE_METRICS}  # the review arm's
    assert {a["name"]: spec.budget(a) for a in spec.arms}["all"] == 1.0
    assert spec.anchor_arms() == {"all"}  # a reference, left out of the summary's average over metric arms
    assert load_spec(spec.path, quick=True).seeds == [0]


# -- end to end -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("bccd")
    out = run_experiment(_slice(root, _test_stems()), out=root / "out", workers=1, progress=False)
    return out


def _subset(out: Path, arm: str, seed: int) -> Dataset:
    return load_coco(out / "arms" / arm / f"seed{seed}" / "subset.json")


def _boxes(df: pd.DataFrame) -> list:
    return sorted(map(tuple, np.round(df[["image_id", "category_id"] + BOX_COLUMNS].to_numpy(float), 2).tolist()))


@pytest.mark.slow
def test_predicted_arms_train_on_randoms_frames_with_the_oof_predictions_no_label_overlaps(experiment):
    out = experiment
    noisy = load_coco(out / "data" / "train_noisy.json")
    test = load_coco(out / "data" / "test.json")
    oof = load_predictions(out / "oof" / "preds_oof.json", noisy)
    assert set(oof["image_id"]) <= set(noisy.images["id"])  # k-fold on the pool only
    assert not set(noisy.images["file_name"]) & set(test.images["file_name"])
    added_any = 0
    for seed in (0, 1):
        rnd = _subset(out, "random", seed)
        assert len(rnd.images) == 6 and len(_subset(out, "all", seed).images) == 12
        frames = set(rnd.images["file_name"])
        ign, pse = _subset(out, "ignore_predicted", seed), _subset(out, "pseudo_label", seed)
        assert set(ign.images["file_name"]) == set(pse.images["file_name"]) == frames  # common random numbers
        # expected, from the OOF file: confident predictions on these frames overlapping no label (IoU < 0.5)
        labels = noisy.subset(rnd.images["id"].tolist()).annotations
        p = oof[oof["image_id"].isin(rnd.images["id"]) & (oof["score"] >= SCORE)]
        keep = [iou_matrix(r[BOX_COLUMNS].to_numpy(float)[None], labels[labels.image_id == r.image_id][BOX_COLUMNS]
                           .to_numpy(float)).max(initial=0) < 0.5 for _, r in p.iterrows()]
        want = _boxes(p[np.asarray(keep, dtype=bool)]) if len(p) else []
        assert _boxes(ign.annotations[ign.annotations.iscrowd == 1]) == want
        assert _boxes(ign.annotations[ign.annotations.iscrowd == 0]) == _boxes(rnd.annotations)
        assert (pse.annotations.iscrowd == 0).all()
        assert _boxes(pse.annotations) == sorted(_boxes(rnd.annotations) + want)
        for arm, n_ignore in (("ignore_predicted", len(want)), ("pseudo_label", 0)):
            r = json.loads((out / "arms" / arm / f"seed{seed}" / "result.json").read_text())
            assert r["n_added"] == len(want) and r["n_ignore"] == n_ignore
        added_any += len(want)
    assert added_any > 0, "no OOF prediction reached the score: the test checks nothing"


@pytest.mark.slow
def test_the_review_arm_ranks_the_pool_by_its_queue_with_the_oof_predictions(experiment):
    """The arm's frames are those `select` takes from the queue built on the experiment's own metrics run
    (the review rules' metrics) and out-of-fold predictions, walking until random's box count."""
    from qualmet.metric_run import MetricRun
    from qualmet.review import frame_ranking
    from qualmet.select import Strategy, select

    out = experiment
    noisy = load_coco(out / "data" / "train_noisy.json")
    run = MetricRun.load(out / "metrics")
    assert set(RULE_METRICS) <= set(run.metrics)
    frames = frame_ranking(noisy, run, load_predictions(out / "oof" / "preds_oof.json", noisy), RULE_METRICS)
    assert frames["issues"].nunique() > 1, "every frame has as many issues: the ranking checks nothing"
    for seed in (0, 1):
        want = select(run, noisy.images["id"], Strategy("review", match="boxes"), 0.5, seed, review_frames=frames)
        got = _subset(out, "review", seed)
        assert sorted(got.images["id"].astype(int)) == want.image_ids
        rnd = _subset(out, "random", seed)
        assert len(got.annotations) >= len(rnd.annotations) > 0  # box-matched to random's count
        issues = frames.set_index("image_id")["issues"]
        assert issues.loc[want.image_ids].max() <= issues.drop(index=want.image_ids).min()  # the fewest issues


@pytest.mark.slow
def test_results_per_test_set_and_per_class(experiment):
    out = experiment
    for name in ("results.csv", "results_original.csv"):
        df = pd.read_csv(out / name)
        assert sorted(zip(df.arm, df.seed)) == sorted((a, s) for a in ("random", "all", "ignore_predicted",
                                                                         "pseudo_label", "review") for s in (0, 1))
        assert "n_added" in df
    assert (out / "summary_original.md").is_file() and (out / "contrasts_original.csv").is_file()
    r = json.loads((out / "arms" / "random" / "seed0" / "result.json").read_text())
    assert set(r["per_class_AP"]) == set(r["also_test"]["original"]["per_class_AP"]) == {"Platelets", "RBC", "WBC"}
    main, orig = pd.read_csv(out / "results.csv"), pd.read_csv(out / "results_original.csv")
    assert main.AP.round(6).tolist() != orig.AP.round(6).tolist() or main.AP.isna().all()  # scored on other labels
    for md in ("summary.md", "summary_original.md"):
        text = (out / md).read_text()
        assert "## AP per class" in text and "| arm | Platelets | RBC | WBC |" in text
        assert text.count("| pseudo_label |") == 2  # the arms table and the per-class table
    assert "test labels: original" in (out / "summary_original.md").read_text()
