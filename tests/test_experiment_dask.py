"""Arms on a Dask cluster: two local workers give results.csv byte for byte equal to the serial run
(same seeds, same selections, deterministic training), also when a worker is killed mid-arm."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed", reason="the Dask executor needs dask[distributed]")

SPEC = """
name = "dask_tiny"
budget = 0.5
seeds = [0, 1]

[data]
source = "synthetic"
train = 24
test = 8
size = 96
seed = 5

[noise]
rate = 0.3
seed = 2

[detector]
recipe = "ssdlite256"
iters = 16
input_size = 96
bn_recalib_images = 8
checkpoint_every = 4

[[arms]]
name = "random"
strategy = "random"

[[arms]]
name = "clean"
strategy = "clean"
"""


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    import torch

    from qualmet.experiment import run_experiment

    root = tmp_path_factory.mktemp("dask_arms")
    spec = root / "dask_tiny.toml"
    spec.write_text(SPEC)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Dask worker (one thread each): the same arithmetic, bit for bit
    try:
        out = run_experiment(spec, out=root / "serial", progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"spec": spec, "root": root, "results": (out / "results.csv").read_bytes()}


@pytest.mark.slow
def test_two_dask_workers_give_the_serial_results(serial):
    from qualmet.experiment import run_experiment

    out = run_experiment(serial["spec"], out=serial["root"] / "dask", progress=False, executor="dask", workers=2)
    assert (out / "results.csv").read_bytes() == serial["results"]
    assert len(list((out / "arms").glob("*/seed*/result.json"))) == 4


def _kill_a_training_worker(out: Path, stop: threading.Event, killed: list) -> None:
    """Once an arm has written a checkpoint, kill the worker process that holds most CPU time."""
    import psutil

    while not stop.is_set() and not killed:
        if list(out.glob("arms/*/seed*/model/*.pt")):
            workers = [p for p in psutil.Process().children(recursive=True)
                       if "multiprocessing" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
            if workers:
                victim = max(workers, key=lambda p: sum(p.cpu_times()[:2]))
                victim.kill()
                killed.append(victim.pid)
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_arm_is_retried_and_the_results_still_equal(serial):
    from qualmet.experiment import run_experiment

    out = serial["root"] / "dask_killed"
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_a_training_worker, args=(out, stop, killed), daemon=True)
    watcher.start()
    try:
        run_experiment(serial["spec"], out=out, progress=False, executor="dask", workers=2)
    finally:
        stop.set()
        watcher.join(5)
    assert killed, "no worker was killed: the test did not test a death"
    assert (out / "results.csv").read_bytes() == serial["results"]


@pytest.mark.slow
def test_crossval_folds_on_dask_give_the_serial_predictions(tmp_path):
    from qualmet.detector.crossval import crossval

    from .detector_helpers import ellipses

    data = ellipses(tmp_path / "data", 9, 96, seed=7)
    kw = dict(folds=3, iters=4, seed=1, device="cpu", input_size=96, batch_size=4, eval_every=4,
              bn_recalib_images=8, threads=1)
    serial = crossval(data, out=tmp_path / "serial.json", **kw)
    on_dask = crossval(data, out=tmp_path / "dask.json", executor="dask", workers=2, **kw)
    assert (tmp_path / "dask.json").read_bytes() == (tmp_path / "serial.json").read_bytes()
    pd.testing.assert_frame_equal(on_dask, serial)
    assert sorted(serial["fold"].unique()) == [0, 1, 2]
    for k in range(3):  # the workers wrote the fold folders, where a rerun finds them
        assert (tmp_path / "dask_folds" / f"fold_{k}" / "preds.parquet").is_file()
