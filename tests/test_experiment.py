"""The experiment runner end to end on a tiny spec: same budget for every arm (frames, or random's box
count), an oracle arm that really fixes labels, the clean anchor, summaries written, and a rerun
that trains nothing."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from qualmet.errors import QualmetError
from qualmet.experiment import load_spec, run_experiment
from qualmet.formats import load_coco

SPEC = Path(__file__).parent / "data" / "tiny_experiment.toml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    run_experiment(SPEC, out=out, progress=False)
    return out


@pytest.mark.slow
def test_every_arm_trains_on_the_same_budget_and_is_scored(tiny):
    res = pd.read_csv(tiny / "results.csv")
    assert list(res.arm) == ["random", "filter:box_tightness_iou", "oracle_relabel"]
    r = res.set_index("arm")
    assert (r.loc[["random", "oracle_relabel"], "n_frames"] == 20).all()  # budget 0.5 of 40 frames
    assert r.loc["filter:box_tightness_iou", "n_boxes"] >= r.loc["random", "n_boxes"]  # match = "boxes"
    assert 0 < r.loc["oracle_relabel", "n_wrong"] < r.loc["random", "n_wrong"]  # known-wrong boxes, from the manifest
    c = pd.read_csv(tiny / "contrasts.csv")
    assert list(c.contrast) == ["filter:box_tightness_iou − random", "oracle_relabel − random"]
    assert "## Declared contrasts" in (tiny / "summary.md").read_text()
    assert res[["AP", "AP50", "AR100"]].notna().all().all()
    assert ((res.AP >= 0) & (res.AP <= 1)).all()
    for f in ("summary.md", "summary.png", "summary.csv", "config.json", "spec.toml", "label_errors/label_errors.csv"):
        assert (tiny / f).exists(), f
    assert "| random | 1 |" in (tiny / "summary.md").read_text()
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["spec"]["budget"] == 0.5 and cfg["qualmet_version"]


@pytest.mark.slow
def test_filter_arm_drops_what_the_metric_flags(tiny):
    reasons = pd.read_csv(tiny / "arms" / "filter_box_tightness_iou" / "seed0" / "reasons.csv")
    dropped = reasons[reasons.reason.str.startswith("dropped")]
    assert len(dropped) > 0 and not dropped.kept.any()


@pytest.mark.slow
def test_oracle_arm_has_its_relabelled_frames_restored(tiny):
    from qualmet.manifest import load_manifest

    arm = tiny / "arms" / "oracle_relabel" / "seed0"
    reasons = pd.read_csv(arm / "reasons.csv")
    fixed = set(reasons.loc[reasons.reason.str.contains("relabel"), "image_id"])
    assert len(fixed) == 10
    sub = load_coco(arm / "subset.json", images=tiny / "data" / "images")
    clean = load_coco(tiny / "data" / "train.json")
    man = load_manifest(tiny / "data" / "manifest.json")
    noisy_frames = set(man.image_id) & fixed
    assert noisy_frames, "the relabelled frames should include some with injected errors"
    cols = ["image_id", "category_id", "x", "y", "w", "h"]
    for i in noisy_frames:  # restored frames carry exactly the clean boxes
        a = sub.annotations[sub.annotations.image_id == i][cols].sort_values(cols).to_numpy()
        b = clean.annotations[clean.annotations.image_id == i][cols].sort_values(cols).to_numpy()
        assert (a == b).all() and a.shape == b.shape


@pytest.mark.slow
def test_rerun_skips_finished_arms(tiny, caplog):
    stamps = {p: p.stat().st_mtime_ns for p in (tiny / "arms").glob("*/seed0/result.json")}
    with caplog.at_level(logging.INFO, logger="qualmet"):
        run_experiment(SPEC, out=tiny, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert caplog.text.count("done before, skipped") == 3


def test_quick_mode_and_spec_errors(tmp_path):
    spec = load_spec(SPEC, quick=True)
    assert [a["name"] for a in spec.arms] == ["random", "oracle_relabel"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[arms]]\nname = "f"\nstrategy = "filter"\n')
    with pytest.raises(QualmetError, match="needs a 'metric'"):
        load_spec(bad)
    bad.write_text('[[arms]]\nname = "f"\nstrategy = "rank"\nmetric = "x"\n')
    with pytest.raises(QualmetError, match="needs an arm named 'random'"):
        load_spec(bad)
    bad.write_text("name = [")
    with pytest.raises(QualmetError, match="malformed TOML"):
        load_spec(bad)


@pytest.mark.parametrize("text,words", [
    ('[detector]\niter = 4\n', r"\[detector\]: recipe has no field\(s\) iter"),
    ('[detector]\nrecipe = "yolo"\n', r"\[detector\]: unknown recipe 'yolo'"),
    ('[detecter]\niters = 4\n', r"unknown key\(s\) detecter in the top level"),
    ('[data]\ntrian = 4\n', r"unknown key\(s\) trian in \[data\]"),
    ('budget = "half"\n', r"budget must be a frame count >= 1 or a fraction in \(0, 1\], got 'half'"),
    ('budget = 1.5\n', r"budget must be"),
    ('metrics = ["box_tightnes"]\n', r"unknown metric\(s\) 'box_tightnes' \(did you mean 'box_tightness'\?\); see `qualmet metrics list`"),
    ('seeds = [0, 1, 0]\n', r"'seeds' lists 0 more than once"),
    ('seeds = [0, -1]\n', r"'seeds' must be whole numbers from 0 up, got -1"),
    ('seeds = [0, 1.5]\n', r"'seeds' must be whole numbers from 0 up, got 1.5"),
    ('seeds = 3\n', r"'seeds' must list at least one seed"),
])
def test_spec_typos_fail_before_any_work(tmp_path, text, words):  # a repeated seed crashed the summary after training
    """A misspelled key, recipe field, metric or budget is an error naming the spec file, at load time,
    not a silently ignored setting or a crash after the data and metrics were made."""
    bad = tmp_path / "typo.toml"
    bad.write_text(text + '[[arms]]\nname = "random"\nstrategy = "random"\n')
    with pytest.raises(QualmetError, match=words) as e:
        load_spec(bad)
    assert str(bad) in str(e.value)


def test_spec_that_is_not_utf8_is_one_error(tmp_path):
    bad = tmp_path / "latin.toml"
    bad.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(QualmetError, match="not UTF-8 text"):
        load_spec(bad)


@pytest.mark.slow
def test_select_and_errors_commands_on_the_experiment_metrics(tiny, tmp_path, capsys):
    from qualmet.cli import main

    data = tiny / "data"
    rc = main(["select", str(data / "train_noisy.json"), "--images", str(data / "images"), "--run", str(tiny / "metrics"),
               "--strategy", "relabel", "--metrics", "box_tightness_iou,max_iou_other", "--k", "5", "--budget", "1.0",
               "--out", str(tmp_path / "sel")])
    assert rc == 0
    rel = load_coco(tmp_path / "sel" / "relabel.json", images=data / "images")
    assert len(rel.images) == 5 and rel.annotations["suspicious"].sum() >= 5
    rc = main(["errors", str(data / "train_noisy.json"), "--manifest", str(data / "manifest.json"),
               "--run", str(tiny / "metrics"), "--out", str(tmp_path / "err")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "err" / "label_errors.csv")
    assert set(table.metric) == {"box_tightness_iou", "max_iou_other"}
    assert table.auroc.between(0, 1).all() and (table.positives > 0).all()


@pytest.mark.slow
def test_importance_command_on_a_trained_arm(tiny, tmp_path):
    from qualmet.cli import main

    rc = main(["importance", str(tiny / "arms" / "random" / "seed0" / "model"), str(tiny / "data" / "test.json"),
               "--images", str(tiny / "data" / "images"), "--metrics", "area_relative, black_white_ratio,area_relative,",
               "--out", str(tmp_path / "imp")])  # a space, a repeat and a trailing comma (a KeyError after predicting)
    assert rc == 0
    t = pd.read_csv(tmp_path / "imp" / "importance.csv")
    assert sorted(t.metric) == ["area_relative", "black_white_ratio"] and (t.n > 0).all()
    assert (tmp_path / "imp" / "importance.png").exists() and (tmp_path / "imp" / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_rerun_retrains_an_arm_whose_selection_changed(tiny, caplog):
    """Same configuration but other training data (metric values moved with code or library
    versions): that arm is retrained, the others are not."""
    arms = tiny / "arms"
    res = {p.parent.parent.name: p for p in arms.glob("*/seed0/result.json")}
    for name in ("random", "filter_box_tightness_iou"):
        r = json.loads(res[name].read_text())
        assert r["selection_hash"] and r["environment"]["opencv"]
        r["selection_hash"] = "0" * 16  # recorded for other training data
        res[name].write_text(json.dumps(r))
    stamps = {k: p.stat().st_mtime_ns for k, p in res.items()}
    with caplog.at_level(logging.INFO, logger="qualmet"):
        run_experiment(SPEC, out=tiny, progress=False)
    out = caplog.text
    assert out.count("done before") == 1 and out.count("select other frames") == 2
    changed = {k for k, p in res.items() if p.stat().st_mtime_ns != stamps[k]}
    assert changed == {"random", "filter_box_tightness_iou"}  # oracle_relabel: unchanged, skipped
    for k in changed:
        assert json.loads(res[k].read_text())["selection_hash"] != "0" * 16


def test_an_arm_whose_training_labels_changed_starts_its_model_afresh(tmp_path):
    """Same frames, other labels (e.g. another noise rate or oracle k): the arm's old model must not be
    resumed or reused; the same data keeps it (an interrupted training resumes)."""
    from qualmet.experiment.arms import clear_stale_training as _clear_stale_training

    arm = tmp_path / "arm"
    (arm / "model").mkdir(parents=True)
    (arm / "model" / "checkpoint.pt").write_bytes(b"old")
    want = {"selection_hash": "a" * 16, "labels_sha256": "b" * 64}
    _clear_stale_training(arm, want)  # no record of what the model was for: not trusted
    assert not (arm / "model").exists()
    (arm / "model").mkdir()
    (arm / "model" / "checkpoint.pt").write_bytes(b"same data")
    _clear_stale_training(arm, want)  # recorded for exactly this data: kept, to resume
    assert (arm / "model" / "checkpoint.pt").read_bytes() == b"same data"
    _clear_stale_training(arm, {**want, "labels_sha256": "c" * 64})
    assert not (arm / "model").exists()
    assert json.loads((arm / "training.json").read_text())["labels_sha256"] == "c" * 64


@pytest.mark.slow
def test_training_refuses_a_checkpoint_made_from_other_labels(tmp_path, capsys):
    from qualmet.cli import main

    from .detector_helpers import ellipses

    data = ellipses(tmp_path / "d", 4, 64, seed=0)
    args = ["train", str(data), "--out", str(tmp_path / "m"), "--iters", "2", "--input-size", "64",
            "--batch-size", "2", "--device", "cpu", "--checkpoint-every", "1"]
    assert main(args) == 0
    d = json.loads(data.read_text())
    d["annotations"][0]["bbox"][0] += 3  # same frames, one box moved
    data.write_text(json.dumps(d))
    assert main(args) == 2
    assert "different training (train_data differ)" in capsys.readouterr().err


def test_arm_names_that_share_a_folder_are_refused(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[[arms]]\nname = "random"\nstrategy = "random"\n'
                    '[[arms]]\nname = "filter:aspect_ratio"\nstrategy = "filter"\nmetric = "aspect_ratio"\n'
                    '[[arms]]\nname = "filter_aspect_ratio"\nstrategy = "filter"\nmetric = "aspect_ratio"\n')
    with pytest.raises(QualmetError, match="'filter:aspect_ratio' and 'filter_aspect_ratio' map to the same folder"):
        load_spec(spec)


def test_report_keeps_arm_names_that_look_like_missing_values(tmp_path):
    from qualmet.report.inputs import _read_csv

    p = tmp_path / "results.csv"
    pd.DataFrame({"arm": ["random", "NA", "None"], "AP": [0.5, None, 0.4]}).to_csv(p, index=False)
    df = _read_csv(p)
    assert df["arm"].tolist() == ["random", "NA", "None"] and df["AP"].isna().tolist() == [False, True, False]



def test_a_test_split_with_other_categories_fails_before_training(tmp_path):
    """The models predict the training file's categories; a test file naming them otherwise made every
    arm train and then fail in evaluate."""
    from qualmet.experiment import prepare_data

    rows = "filename,width,height,class,xmin,ymin,xmax,ymax\n"
    (tmp_path / "train.csv").write_text(rows + "a.jpg,64,64,panda,1,1,30,30\n")
    (tmp_path / "test.csv").write_text(rows + "b.jpg,64,64,bear,1,1,30,30\n")
    spec = tmp_path / "s.toml"
    spec.write_text('[data]\nsource = "train.csv"\ntest_source = "test.csv"\n'
                    '[[arms]]\nname = "random"\nstrategy = "random"\n')
    with pytest.raises(QualmetError, match=r"test.csv: its categories differ from those of .*train.csv "
                                           r"\(first: id 1 'panda', which it names 'bear'\)"):
        prepare_data(load_spec(spec), tmp_path / "out")


@pytest.mark.slow
def test_summarize_rewrites_the_summary_from_finished_arms_only(tiny, tmp_path, caplog):
    import shutil

    from qualmet.experiment import summarize_experiment

    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    results = (out / "results.csv").read_bytes()
    (out / "results.csv").unlink()
    summarize_experiment(SPEC, out=out)
    assert (out / "results.csv").read_bytes() == results
    assert "PARTIAL" not in (out / "summary.md").read_text()
    (out / "arms" / "oracle_relabel" / "seed0" / "result.json").unlink()
    summarize_experiment(SPEC, out=out)
    res = pd.read_csv(out / "results.csv")
    assert list(res.arm) == ["random", "filter:box_tightness_iou"]
    assert "PARTIAL: 2 of 3 arm runs finished" in (out / "summary.md").read_text()
    f = out / "arms" / "filter_box_tightness_iou" / "seed0" / "result.json"
    r = json.loads(f.read_text())
    r["config_hash"] = "0" * 16  # made with another configuration: left out, with a warning
    f.write_text(json.dumps(r))
    with caplog.at_level(logging.WARNING, logger="qualmet"):
        summarize_experiment(SPEC, out=out)
    assert "made with another configuration" in caplog.text
    assert list(pd.read_csv(out / "results.csv").arm) == ["random"]
