"""The Dask executor: same tables as the local runner (plugin files included), CLI seam, resume, a killed worker."""
from __future__ import annotations

import math
import os
import signal
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.errors import QualmetError
from qualmet.executors import LocalExecutor
from qualmet.runner import run_metrics

distributed = pytest.importorskip("distributed")

from qualmet.dask_executor import DaskExecutor, parse_executor  # noqa: E402

CHUNK = 4  # 40 frames -> 10 chunks, so both workers get several
METRICS = ["brightness", "sharpness", "box_tightness_iou", "aspect_ratio", "object_count", "max_iou_other"]
PLUGIN = '''
import time
import numpy as np
import qualmet

@qualmet.metric(name="box_red", level="object", needs={"pixels"}, worse="low")
def box_red(ctx):
    out = []
    for x, y, w, h in ctx.boxes:
        crop = ctx.image[int(y):int(y + h) + 1, int(x):int(x + w) + 1, 0]
        out.append(float(crop.mean()) if crop.size else np.nan)
    return out

@qualmet.metric(name="green_std", level="frame", needs={"pixels"}, worse="low")
def green_std(ctx):
    time.sleep(SLEEP)
    if ctx.image_id % 7 == 3:
        raise ValueError("plugin refuses this frame")
    return float(ctx.image[..., 1].std())
'''


def write_plugin(path: Path, sleep: float = 0.0) -> Path:
    path.write_text(textwrap.dedent(PLUGIN).replace("SLEEP", repr(sleep)))
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from qualmet.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=40, n_test=0, seed=0, size=128, workers=1)
    return out / "train.json"


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def assert_same(a, b) -> None:
    """Object and frame tables equal exactly (after sorting by id), and the same error records (whether
    a record was read back from the cache aside)."""
    pd.testing.assert_frame_equal(a.objects.sort_values("annotation_id").reset_index(drop=True),
                                  b.objects.sort_values("annotation_id").reset_index(drop=True))
    pd.testing.assert_frame_equal(a.frames.sort_values("image_id").reset_index(drop=True),
                                  b.frames.sort_values("image_id").reset_index(drop=True))
    def fresh(errors):
        return [{k: v for k, v in e.items() if k != "cached"} for e in errors]

    assert fresh(a.errors) == fresh(b.errors)


def chunk_files(run_dir: Path) -> list[Path]:
    """The per-chunk parquet files (not the vectorised metrics' whole-data-set caches ``vec-*``)."""
    return sorted(f for f in (run_dir / "chunks").glob("*.parquet") if not f.name.startswith("vec-"))


def local_run(synth, plugin, **kw):
    return run_metrics(synth, metrics=METRICS + ["box_red", "green_std"], plugins=[plugin], chunk_size=CHUNK,
                       executor=LocalExecutor(2), progress=False, **kw)


def test_dask_equals_local_with_plugin_file(synth, client, tmp_path):
    plugin = write_plugin(tmp_path / "my_metrics.py")
    local = local_run(synth, plugin)
    dask = run_metrics(synth, metrics=METRICS + ["box_red", "green_std"], plugins=[plugin], chunk_size=CHUNK,
                       executor=DaskExecutor(client=client), progress=False, out=tmp_path / "run")
    assert_same(local, dask)
    # the plugin really ran on the workers: real values, and its errors came back per frame
    assert dask.objects["box_red"].notna().sum() > 0.9 * len(dask.objects)
    bad = sorted(i for i in dask.frames["image_id"] if i % 7 == 3)
    assert bad and [e["image_id"] for e in dask.errors] == bad
    assert all(e["metric"] == "green_std" and "refuses" in e["error"] for e in dask.errors)
    assert dask.info["counters"]["chunks_computed"] == 10
    assert len(chunk_files(tmp_path / "run")) == 10
    # the workers (other processes) loaded the plugin file themselves
    worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids and len(worker_pids) == 2


def test_cli_scheduler_address_and_resume(synth, client, tmp_path, capsys):
    plugin = write_plugin(tmp_path / "my_metrics.py")
    local = local_run(synth, plugin)
    out = tmp_path / "run"
    argv = ["metrics", "run", str(synth), "--metrics", ",".join(METRICS + ["box_red", "green_std"]),
            "--plugins", str(plugin), "--out", str(out), "--chunk-size", str(CHUNK), "--no-progress",
            "--executor", f"dask:{client.scheduler.address}"]
    assert main(argv) == 1  # green_std raised on some frames
    objs, frames = pd.read_parquet(out / "objects.parquet"), pd.read_parquet(out / "frames.parquet")
    pd.testing.assert_frame_equal(local.objects.reset_index(drop=True), objs)
    pd.testing.assert_frame_equal(local.frames.reset_index(drop=True), frames)

    # resume: drop 3 of the 10 chunk files; only those 3 chunks are computed again, the result is unchanged
    chunks = chunk_files(out)
    assert len(chunks) == 10
    for f in chunks[:3]:
        f.unlink()
    kept = {f: f.stat().st_mtime_ns for f in chunks[3:]}
    again = run_metrics(synth, metrics=METRICS + ["box_red", "green_std"], plugins=[plugin], chunk_size=CHUNK,
                        out=out, executor=f"dask:{client.scheduler.address}", progress=False)
    assert again.info["counters"]["chunks_computed"] == 3
    assert {f: f.stat().st_mtime_ns for f in chunks[3:]} == kept  # finished chunks were not rewritten
    assert_same(local, again)
    third = run_metrics(synth, metrics=METRICS + ["box_red", "green_std"], plugins=[plugin], chunk_size=CHUNK,
                        out=out, executor=f"dask:{client.scheduler.address}", progress=False)
    assert third.info["counters"]["chunks_computed"] == 0
    assert_same(local, third)


class KillAfterFirst:
    """Wraps a DaskExecutor: SIGKILLs one worker process as soon as the first chunk result arrives."""

    def __init__(self, inner: DaskExecutor, pid: int):
        self.inner, self.pid, self.results_before_kill = inner, pid, None

    def map_unordered(self, fn, tasks):
        for i, item in enumerate(self.inner.map_unordered(fn, tasks)):
            if i == 0:
                os.kill(self.pid, signal.SIGKILL)
                self.results_before_kill = 1
            yield item

    def close(self, cancel: bool = False) -> None:
        self.inner.close(cancel)


def _worker_settings():
    import torch

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), torch.get_num_threads()


def test_local_workers_keep_glibc_malloc_and_training_workers_share_the_cores(monkeypatch):
    """Dask's MALLOC_TRIM_THRESHOLD_ made every large buffer an mmap (training 1.5x slower, half of it
    in the kernel); training workers get cores // workers torch threads each, never oversubscribed."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    for training in (False, True):
        ex = DaskExecutor(n_workers=2, torch_threads=training)
        try:
            got = list(ex.client.run(_worker_settings).values())
        finally:
            ex.close()
        assert len(got) == 2 and all(trim is None for trim, _ in got), got
        if training:
            assert [n for _, n in got] == [max(1, (os.cpu_count() or 1) // 2)] * 2, got


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_worker_killed_mid_run_gives_identical_result(synth, tmp_path):
    plugin = write_plugin(tmp_path / "slow_metrics.py", sleep=0.03)  # ~0.12 s per chunk: the kill lands mid-run
    local = local_run(synth, plugin)
    ex = DaskExecutor(n_workers=2)
    pids = sorted(ex.client.run(os.getpid).values())
    assert len(pids) == 2
    killer = KillAfterFirst(ex, pids[0])
    dask = run_metrics(synth, metrics=METRICS + ["box_red", "green_std"], plugins=[plugin], chunk_size=CHUNK,
                       executor=killer, progress=False, out=tmp_path / "run")
    assert killer.results_before_kill == 1
    key = lambda e: (e["metric"], e["image_id"])  # noqa: E731
    assert sorted(dask.info["errors"], key=key) == sorted(local.info["errors"], key=key)  # no chunk lost
    assert_same(local, dask)
    assert dask.info["counters"]["chunks_computed"] == 10
    assert len(chunk_files(tmp_path / "run")) == 10
    assert ex.cluster is None  # the runner closed the executor and its cluster


def test_executor_specs_and_missing_dask(monkeypatch):
    assert parse_executor("local") == ("local", None)
    assert parse_executor("dask") == ("dask", None)
    assert parse_executor("dask:tcp://10.0.0.5:8786") == ("dask", "tcp://10.0.0.5:8786")
    for bad in ("spark", "dask:", "dask:10.0.0.5:8786"):
        with pytest.raises(QualmetError, match="--executor"):
            parse_executor(bad)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    with pytest.raises(QualmetError, match=r"pip install qualmet\[dask\]"):
        parse_executor("dask:tcp://127.0.0.1:8786")
    with pytest.raises(QualmetError, match=r"pip install qualmet\[dask\]"):
        DaskExecutor()


def test_local_cluster_leaves_this_process_environment_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    ex = DaskExecutor(n_workers=1)
    try:
        assert "OMP_NUM_THREADS" not in os.environ  # Dask sets it to 1 for its workers; not for us
    finally:
        ex.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_frame_that_always_kills_its_worker_costs_only_that_frame(synth, tmp_path):
    """Dask gives up on a task that keeps killing workers (KilledWorker); the runner then runs that
    chunk frame by frame, so only the deadly frame is lost."""
    import dask

    plugin = tmp_path / "killer.py"
    plugin.write_text(textwrap.dedent('''
        import os, signal
        import qualmet

        @qualmet.metric(name="killer", level="frame", needs={"pixels"}, worse="low")
        def killer(ctx):
            if ctx.image_id == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return float(ctx.image_id)
    '''))
    names = ["killer", "brightness", "aspect_ratio"]
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # give up at the second death (fast)
        run = run_metrics(synth, metrics=names, plugins=[plugin], chunk_size=CHUNK, executor=DaskExecutor(n_workers=2),
                          progress=False, out=tmp_path / "run")
    ref = run_metrics(synth, metrics=["brightness"], chunk_size=CHUNK, workers=1, progress=False)
    f = run.frames.set_index("image_id")
    assert f["killer"].isna().sum() == 1 and math.isnan(f.loc[6, "killer"]) and math.isnan(f.loc[6, "brightness"])
    ok = f.index != 6
    assert f.loc[ok, "killer"].tolist() == f.index[ok].astype(float).tolist()
    assert f.loc[ok, "brightness"].tolist() == ref.frames.set_index("image_id").loc[ok, "brightness"].tolist()
    assert {(e["metric"], e["image_id"]) for e in run.errors} == {("killer", 6), ("brightness", 6)}
    assert "KilledWorker" in run.errors[0]["error"]
    assert [e["where"] for e in run.errors] == [None, None]  # not in a plugin's code (nor in Dask's)
    assert run.info["counters"]["chunks_failed"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT")
def test_ctrl_c_on_a_loopback_cluster_is_one_line(synth, tmp_path):
    """Ctrl-C reaches the whole process group; the cluster's processes ignore it, so the run ends
    with qualmet's one line (exit 130), not a traceback from each nanny and worker."""
    import subprocess
    import time

    plugin = write_plugin(tmp_path / "plug.py", sleep=0.5)
    proc = subprocess.Popen([sys.executable, "-m", "qualmet", "metrics", "run", str(synth), "--plugins", str(plugin),
                             "--metrics", "green_std", "--executor", "dask", "--workers", "2", "--chunk-size", "2",
                             "--out", str(tmp_path / "run"), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            # as a terminal's foreground command: a shell's background job (`cmd &`, no job
                            # control) ignores SIGINT, which the child would inherit and never see Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 90  # interrupt once the cluster is working: a chunk file is on disk
    while not list((tmp_path / "run" / "chunks").glob("*.parquet")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    err = err.decode()
    assert proc.returncode == 130 and "interrupted; finished work is kept" in err, err[-3000:]
    assert "Traceback" not in err
