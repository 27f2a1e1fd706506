"""SIGKILL a real `qualmet train` process mid-run, restart the same command, and get exactly the
weights and log of an uninterrupted run; a killed or damaged model folder never passes for a complete one.

24 synthetic frames at 128 px, 16 iterations, a checkpoint every 4 and a log row every 8, so the
whole file takes well under a minute on an idle 2-core machine.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from qualmet.atomic import sha256_file
from qualmet.cli import main
from qualmet.detector.predictor import Predictor
from qualmet.errors import QualmetError

from .detector_helpers import synth_set

ITERS, CKPT_EVERY, EVAL_EVERY = 16, 4, 8
FINAL = {"model.pt", "config.json", "categories.json"}  # present only once training has finished
TEMP = re.compile(r"^\.(.+)\.[^.]+\.tmp(\.[A-Za-z0-9]+)?$")  # qualmet.atomic temp names: .NAME.XXXX.tmp.EXT


def _args(data: Path, out: Path) -> list[str]:
    return ["train", str(data), "--out", str(out), "--iters", str(ITERS), "--input-size", "128",
            "--batch-size", "4", "--device", "cpu", "--seed", "0", "--val-fraction", "0.25",
            "--checkpoint-every", str(CKPT_EVERY), "--eval-every", str(EVAL_EVERY)]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "qualmet.cli", *args]


def _wait_for(proc: subprocess.Popen, *paths: Path, deadline_s: float = 900) -> None:
    """Poll until every path exists; fail (never hang) if the process ends first."""
    end = time.monotonic() + deadline_s
    while not all(p.is_file() for p in paths):
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before {[p.name for p in paths]} existed:\n"
                        f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no {[p.name for p in paths]} after {deadline_s} s")
        time.sleep(0.02)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _log(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "train_log.csv").drop(columns="elapsed_s")  # wall time differs, the rest must not


@pytest.mark.slow
def test_sigkilled_training_resumes_to_identical_weights(tmp_path):
    data = synth_set(tmp_path / "data", 24, 128, seed=1)
    full, cut = tmp_path / "full", tmp_path / "cut"

    # the run to be killed: a real CLI process, killed once a checkpoint and a log row exist (past iteration 8;
    # the checkpoint may still be the one of iteration 4, so the log on disk can be ahead of the checkpoint)
    proc = subprocess.Popen(_cli(_args(data, cut)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        _wait_for(proc, cut / "checkpoint.pt", cut / "train_log.csv")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished

    # what the kill left: a complete checkpoint, progress files, no final outputs; temps are only temps
    names = {p.name for p in cut.iterdir()}
    temps = {n for n in names if TEMP.match(n)}
    assert not FINAL & names, names
    assert names - temps <= {"checkpoint.pt", "train_log.csv", "loss_curves.png"}, names
    ck = torch.load(cut / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["iter"] % CKPT_EVERY == 0 and CKPT_EVERY <= ck["iter"] < ITERS, ck["iter"]
    with pytest.raises(QualmetError, match="not a model folder"):
        Predictor.load(cut, device="cpu")
    # a kill during a write leaves names like these; plant half-written ones: they must never be read
    (cut / ".model.pt.k1ll3d.tmp.pt").write_bytes((cut / "checkpoint.pt").read_bytes()[:5000])
    (cut / ".config.json.k1ll3d.tmp.json").write_text('{"recipe": {"name": ')
    (cut / ".checkpoint.pt.k1ll3d.tmp.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(QualmetError, match="not a model folder"):
        Predictor.load(cut, device="cpu")

    # restart: the very same command resumes from the checkpoint
    res = subprocess.run(_cli(_args(data, cut)), capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"from iteration {ck['iter']}/{ITERS}" in res.stdout, res.stdout
    assert not [p.name for p in cut.iterdir() if TEMP.match(p.name)]  # stale temps removed

    # the uninterrupted run, also a fresh process: this test process may have had its torch thread count
    # changed by earlier tests, and a different thread count sums floats in a different order
    res = subprocess.run(_cli(_args(data, full)), capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-3000:]

    a, b = _weights(full / "model.pt"), _weights(cut / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    pd.testing.assert_frame_equal(_log(full), _log(cut))
    assert list(_log(cut)["iter"]) == [EVAL_EVERY, ITERS] and _log(cut)["val_AP"].notna().all()
    cfg_full, cfg_cut = (json.loads((d / "config.json").read_text()) for d in (full, cut))
    assert {k: v for k, v in cfg_full.items() if k != "outputs"} == {k: v for k, v in cfg_cut.items() if k != "outputs"}
    for d, cfg in ((full, cfg_full), (cut, cfg_cut)):  # config.json, written last, holds the outputs' checksums
        assert set(cfg["outputs"]) == {"model.pt", "categories.json", "train_log.csv", "loss_curves.png"}
        for name, rec in cfg["outputs"].items():
            assert rec["sha256"] == sha256_file(d / name), name


@pytest.mark.slow
def test_damaged_model_is_refused_and_repaired_by_rerun(tmp_path):
    """model.pt that no longer matches config.json's checksum is refused on load; rerunning the
    finished training rewrites it (no iterations are redone) to the same weights."""
    data = synth_set(tmp_path / "data", 24, 128, seed=1)
    out = tmp_path / "m"
    args = ["train", str(data), "--out", str(out), "--iters", "2", "--input-size", "128", "--batch-size", "4",
            "--device", "cpu", "--val-fraction", "0", "--checkpoint-every", "1", "--eval-every", "2"]
    assert main(args) == 0
    good = _weights(out / "model.pt")
    Predictor.load(out, device="cpu")  # intact: loads
    raw = bytearray((out / "model.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the weights
    (out / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(QualmetError, match="SHA-256 differs"):
        Predictor.load(out, device="cpu")
    assert main(args) == 0
    again = _weights(out / "model.pt")
    assert all(torch.equal(good[k], again[k]) for k in good)
    Predictor.load(out, device="cpu")
    (out / "config.json").unlink()  # killed between model.pt and config.json: a rerun completes the folder
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["outputs"]["model.pt"]["sha256"] == sha256_file(out / "model.pt")
