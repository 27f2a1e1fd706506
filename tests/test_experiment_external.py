"""[detector] command: an experiment whose arms are trained by an external program. The arms' results
equal scoring the program's own predictions with `qualmet evaluate`; a failing program is one error
with its exit code and its last lines; a bad command fails when the spec loads."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qualmet.cli import main
from qualmet.errors import QualmetError
from qualmet.experiment import load_spec, run_experiment

TRAINER = Path(__file__).parent / "data" / "external_trainer.py"
SPEC = """name = "external"
budget = 0.5
seeds = [0]
[data]
source = "synthetic"
train = 16
test = 4
size = 96
seed = 6
[noise]
rate = 0.3
seed = 1
[detector]
iters = 4
command = "COMMAND"
[[arms]]
name = "random"
strategy = "random"
[[arms]]
name = "filter:box_tightness_iou"
strategy = "filter"
metric = "box_tightness_iou"
method = "percentile"
percentile = 30
"""


def _spec(tmp_path, command=None):
    cmd = command or f"{sys.executable} {TRAINER} {{train}} {{test}} {{out}} {{seed}} {{iters}}"
    (tmp_path / "s.toml").write_text(SPEC.replace("COMMAND", cmd.replace("\\", "\\\\")))
    return tmp_path / "s.toml"


@pytest.mark.slow
def test_arms_trained_by_an_external_command_score_as_qualmet_evaluate_does(tmp_path, capsys):
    out = run_experiment(_spec(tmp_path), out=tmp_path / "out")
    for arm in ("random", "filter_box_tightness_iou"):
        d = out / "arms" / arm / "seed0"
        result = json.loads((d / "result.json").read_text())
        assert (d / "external" / "model" / "model.pt").is_file()  # the program's own output folder
        assert main(["evaluate", str(d / "test.json"), str(d / "external" / "predictions.json"),
                     "--out", str(tmp_path / f"eval_{arm}"), "-q"]) == 0
        stats = json.loads((tmp_path / f"eval_{arm}" / "metrics.json").read_text())["stats"]
        assert stats == result["stats"]
    assert (out / "summary.md").is_file()


@pytest.mark.slow
def test_a_failing_command_is_one_error_with_its_exit_code_and_last_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("QUALMET_TEST_TRAINER_FAIL", "1")
    with pytest.raises(QualmetError, match=r"command exited with code 3 .*\n(.|\n)*CUDA out of memory \(pretend\)"):
        run_experiment(_spec(tmp_path), out=tmp_path / "out")
    monkeypatch.delenv("QUALMET_TEST_TRAINER_FAIL")
    monkeypatch.setenv("QUALMET_TEST_TRAINER_NO_OUTPUT", "1")
    with pytest.raises(QualmetError, match=r"wrote no .*external/predictions.json"):
        run_experiment(_spec(tmp_path), out=tmp_path / "out")


@pytest.mark.parametrize("command, words", [
    ("train.py {train} {weights}", r"unknown placeholder\(s\) \{weights\}"),
    ("train.py {train", "command: "),
    ("   ", "must be a shell command"),
])
def test_a_bad_command_fails_when_the_spec_loads(tmp_path, command, words):
    with pytest.raises(QualmetError, match=words):
        load_spec(_spec(tmp_path, command))
