"""Ordinary mistakes on the command line give one line naming the file or value and exit code 2,
never a traceback: an output path that is a file, a misspelled metric, a malformed budget, a run or
manifest that belongs to another data set, an empty data set, a frame size too small."""
from __future__ import annotations

import json

import pytest

from qualmet.cli import main

from .metric_helpers import write_dataset


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two small data sets (different content), a metrics run on the first, a noisy copy with manifest."""
    root = tmp_path_factory.mktemp("cli")
    a = write_dataset(root / "a", n=6)
    b = write_dataset(root / "b", n=4)
    assert main(["metrics", "run", str(a), "--metrics", "brightness,aspect_ratio,box_tightness",
                 "--out", str(root / "run"), "--no-progress"]) == 0
    assert main(["corrupt", str(a), "--out", str(root / "a" / "noisy.json"), "--rate", "0.5", "--seed", "1"]) == 0
    assert main(["metrics", "run", str(root / "a" / "noisy.json"), "--metrics", "brightness,aspect_ratio",
                 "--out", str(root / "nrun"), "--no-progress"]) == 0
    (root / "afile").write_text("not a folder")
    return {"root": root, "a": a, "b": b, "run": root / "run", "nrun": root / "nrun", "afile": root / "afile",
            "noisy": root / "a" / "noisy.json", "manifest": root / "a" / "noisy.manifest.json"}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("argv", [
    lambda w: ["synth", "--out", str(w["afile"]), "--train", "2", "--test", "0", "--size", "64"],
    lambda w: ["metrics", "run", str(w["a"]), "--metrics", "aspect_ratio", "--out", str(w["afile"]), "--no-progress"],
    lambda w: ["select", str(w["a"]), "--run", str(w["run"]), "--strategy", "random", "--out", str(w["afile"])],
    lambda w: ["corrupt", str(w["a"]), "--out", str(w["afile"] / "noisy.json")],
])
def test_output_path_that_is_a_file(work, capsys, argv):
    assert main(argv(work)) == 2
    line = _err(capsys)
    assert line.startswith("qualmet: error: ") and f"{work['afile']} is a file, not a folder" in line


def test_select_with_a_misspelled_metric_names_the_metrics_the_run_has(work, capsys):
    assert main(["select", str(work["a"]), "--run", str(work["run"]), "--strategy", "filter", "--metric", "box_tightnes",
                 "--out", str(work["root"] / "sel")]) == 2
    line = _err(capsys)
    assert "metric 'box_tightnes' is not in the metrics run; computed metrics: aspect_ratio, box_tightness, brightness" in line


@pytest.mark.parametrize("budget", ["25%", "abc", "half"])
def test_malformed_budget(work, capsys, budget):
    assert main(["select", str(work["a"]), "--run", str(work["run"]), "--strategy", "random", "--budget", budget,
                 "--out", str(work["root"] / "sel")]) == 2
    assert f"--budget {budget!r}: expected a fraction of the frames (0.25) or a frame count (200)" in _err(capsys)


def test_budget_forms_that_work(work, capsys):
    for budget, n in (("0.5", 3), ("1e-0", 6), ("2", 2)):
        out = work["root"] / f"sel_{n}"
        assert main(["select", str(work["a"]), "--run", str(work["run"]), "--strategy", "random", "--budget", budget,
                     "--out", str(out)]) == 0
        assert len(json.loads((out / "subset.json").read_text())["images"]) == n


def test_run_of_another_data_set_is_refused(work, capsys):
    assert main(["select", str(work["b"]), "--run", str(work["run"]), "--strategy", "random",
                 "--out", str(work["root"] / "sel_b")]) == 2
    line = _err(capsys)
    assert f"{work['run']}: this metrics run was computed on another data set" in line and str(work["b"]) in line
    assert not (work["root"] / "sel_b").exists()


def test_errors_checks_the_run_and_the_manifest_against_the_data_set(work, capsys):
    ok = main(["errors", str(work["noisy"]), "--manifest", str(work["manifest"]), "--run", str(work["nrun"]),
               "--out", str(work["root"] / "err")])
    assert ok == 0 and (work["root"] / "err" / "label_errors.csv").exists()
    capsys.readouterr()
    # the clean data set with the noisy manifest: boxes differ from what the manifest says they became
    assert main(["errors", str(work["a"]), "--manifest", str(work["manifest"]), "--run", str(work["run"]),
                 "--out", str(work["root"] / "err2")]) == 2
    line = _err(capsys)
    assert f"{work['manifest']}: does not describe {work['a']}: annotation " in line
    # the noisy data set with the clean set's run
    assert main(["errors", str(work["noisy"]), "--manifest", str(work["manifest"]), "--run", str(work["run"]),
                 "--out", str(work["root"] / "err3")]) == 2
    assert "this metrics run was computed on another data set" in _err(capsys)
    # a manifest of nothing (corrupt --rate 0): it printed "Empty DataFrame" and drew an empty heat map
    assert main(["corrupt", str(work["a"]), "--out", str(work["root"] / "zero.json"), "--rate", "0"]) == 0
    assert main(["errors", str(work["root"] / "zero.json"), "--manifest", str(work["root"] / "zero.manifest.json"),
                 "--run", str(work["run"]), "--out", str(work["root"] / "err4")]) == 2
    assert "zero.manifest.json: records no injected error" in _err(capsys)


def test_select_on_an_empty_data_set(work, capsys, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "panda"}]}))
    assert main(["metrics", "run", str(empty), "--metrics", "aspect_ratio", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    assert main(["select", str(empty), "--run", str(tmp_path / "r"), "--strategy", "random",
                 "--out", str(tmp_path / "s")]) == 2
    assert "the data set has no frames to select from" in _err(capsys)


def test_synthetic_frame_size_too_small(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--train", "2", "--test", "0", "--size", "0"]) == 2
    assert "synthetic frame size 0x0: each side must be 32 to 8192 px" in _err(capsys)


def test_select_relabel_by_a_frame_metric_writes_relabel_json(work, capsys):
    """A frame-level metric marks frames, not boxes; the frames to relabel are still written."""
    out = work["root"] / "relabel"
    assert main(["select", str(work["a"]), "--run", str(work["run"]), "--strategy", "relabel", "--metric", "brightness",
                 "--budget", "4", "--k", "2", "--out", str(out)]) == 0
    rel = json.loads((out / "relabel.json").read_text())
    assert len(rel["images"]) == 2 and not any(a.get("suspicious") for a in rel["annotations"])
    assert "2 frames to relabel, 0 suspicious boxes marked" in capsys.readouterr().out


def test_predictions_for_other_images_are_a_one_line_warning(work, tmp_path, capsys):
    """Predictions far outside the 120x96 frames (made on bigger images): the run goes on, and says so."""
    preds = [{"image_id": 1, "category_id": 1, "bbox": [300, 200, 40, 30], "score": 0.9}]
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert main(["metrics", "run", str(work["a"]), "--predictions", str(tmp_path / "p.json"), "--metrics",
                 "confidence", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "PredictionsWarning" not in err
    assert "qualmet: warning: " + str(tmp_path / "p.json") + ": 1 of 1 predictions lie wholly outside" in err
    # with warnings made errors (python -W error), the same is a one-line error, exit code 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["metrics", "run", str(work["a"]), "--predictions", str(tmp_path / "p.json"), "--metrics",
                     "confidence", "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert _err(capsys).startswith("qualmet: error: " + str(tmp_path / "p.json") + ": 1 of 1 predictions lie wholly")


def test_a_data_set_folder_where_a_coco_json_goes_says_how_to_convert_it(tmp_path, capsys):
    voc = tmp_path / "annotations"  # e.g. a VOC folder
    voc.mkdir()
    assert main(["metrics", "run", str(voc), "--metrics", "aspect_ratio", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert _err(capsys) == (f"qualmet: error: {voc}: is a folder, not a JSON file (for a VOC, YOLO or CSV data set, "
                            f"`qualmet convert {voc} --out data.json` writes the COCO JSON this command takes)")
    (tmp_path / "preds").mkdir()  # predictions are no data set: no conversion advice
    data = write_dataset(tmp_path / "ds", n=2)
    assert main(["metrics", "run", str(data), "--predictions", str(tmp_path / "preds"), "--metrics", "confidence",
                 "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert _err(capsys) == f"qualmet: error: {tmp_path / 'preds'}: is a folder, not a JSON file"
