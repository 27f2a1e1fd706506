"""What the metric cache keys cover, and worker processes that outlive a run or their parent: a
change to anything a metric's values depend on recomputes, and stale code never fills the cache."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qualmet.errors import QualmetError
from qualmet.compute import ChunkTask, compute_chunk
from qualmet.executors import LocalExecutor
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "ds", n=6)


def _plugin(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "plug.py"
    p.write_text(textwrap.dedent(body))
    return p


SCALED = '''
import qualmet
from .helper_mod import FACTOR

@qualmet.metric(name="scaled_w", level="object", worse="low")
def scaled_w(ctx):
    return ctx.boxes[:, 2] * FACTOR
'''


def _edit_recomputes(data, out, metric, plugin, edit, factor, between=lambda: None) -> None:
    """Run ``metric``, call ``between`` and ``edit``, run again: every frame is recomputed, with the
    values multiplied by ``factor`` (the new code's, not a stale import's)."""
    def run():
        return run_metrics(data, metrics=[metric], plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)

    first = run()
    between()
    edit()
    again = run()
    assert again.info["counters"]["computed"][metric] == 6
    assert np.allclose(again.objects[metric], factor * first.objects[metric])


def test_editing_a_helper_module_the_plugin_imports_recomputes(data, tmp_path):
    folder = tmp_path / "plugs"
    plugin = _plugin(folder, SCALED)
    (folder / "helper_mod.py").write_text("FACTOR = 1.0\n")
    out = tmp_path / "run"

    def unchanged_rerun_is_cached():
        assert run_metrics(data, metrics=["scaled_w"], plugins=[plugin], out=out, workers=1, chunk_size=2,
                           progress=False).info["counters"]["computed"]["scaled_w"] == 0

    # this process imported the old helper
    _edit_recomputes(data, out, "scaled_w", plugin, lambda: (folder / "helper_mod.py").write_text("FACTOR = 2.0\n"), 2,
                     between=unchanged_rerun_is_cached)


def test_editing_a_helpers_own_helper_recomputes(data, tmp_path):
    """helper_mod takes FACTOR from base_mod: an edit two imports away still reaches the cache key."""
    folder = tmp_path / "plugs"
    plugin = _plugin(folder, SCALED)
    (folder / "helper_mod.py").write_text("from .base_mod import BASE\nFACTOR = BASE\n")
    (folder / "base_mod.py").write_text("BASE = 1.0\n")
    _edit_recomputes(data, tmp_path / "run", "scaled_w", plugin, lambda: (folder / "base_mod.py").write_text("BASE = 3.0\n"), 3)


def test_a_helper_imported_by_its_bare_name_is_refused(tmp_path, monkeypatch):
    """``from helper_mod import X`` through a sys.path entry would keep the old module after an edit
    (stale values under the new key): it is an error that says how to import it."""
    import sys

    from qualmet.discovery import load_registry
    from qualmet.errors import QualmetError

    plain = _plugin(tmp_path / "plain", SCALED.replace("from .helper_mod", "from helper_mod"))
    (plain.parent / "helper_mod.py").write_text("FACTOR = 1.0\n")
    with pytest.raises(QualmetError, match=r"No module named 'helper_mod' \(helper_mod lies beside the plugin: import it relatively"):
        load_registry([plain], entry_points=False)
    folder = tmp_path / "plugs"
    plugin = _plugin(folder, SCALED.replace("from .helper_mod", "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\nfrom helper_mod"))
    (folder / "helper_mod.py").write_text("FACTOR = 1.0\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the plugin's own sys.path entry goes with the test
    with pytest.raises(QualmetError, match=r"imports its helper helper_mod by its bare name; import it relatively \(`from \.helper_mod"):
        load_registry([plugin], entry_points=False)


def test_editing_a_comment_in_qualmets_core_reuses_the_cache(data, tmp_path):
    """The cache key holds qualmet's version, not its source: a copy of qualmet whose context and
    compute modules carry an extra comment reads every value from the cache."""
    import shutil
    import subprocess
    import sys

    import qualmet
    import qualmet.builtin_metrics

    out = tmp_path / "run"
    names = ["black_white_ratio", "brightness", "aspect_ratio"]
    run_metrics(data, metrics=names, out=out, workers=1, chunk_size=2, progress=False)
    copy = tmp_path / "copy" / "qualmet"
    shutil.copytree(Path(qualmet.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(qualmet.builtin_metrics.__file__).parent, copy / "builtin_metrics",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for f in ("context.py", "compute.py"):
        (copy / f).write_text((copy / f).read_text() + "# an edited comment\n")
    code = ("import json, qualmet; from qualmet.runner import run_metrics; "
            f"r = run_metrics({str(data)!r}, metrics={names!r}, out={str(out)!r}, workers=1, chunk_size=2, progress=False); "
            "print(json.dumps([qualmet.__file__, r.info['counters']['computed']]))")
    env = {**__import__("os").environ, "PYTHONPATH": str(copy.parent)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    where, computed = json.loads(res.stdout.strip().splitlines()[-1])
    assert where == str(copy / "__init__.py")
    assert computed == {n: 0 for n in names}


PACKAGED = '''
import qualmet
from .hp.core import scale

@qualmet.metric(name="pkg_w", level="object", worse="low")
def pkg_w(ctx):
    return scale(ctx.boxes[:, 2])
'''


def test_editing_a_module_a_helper_package_imports_relatively_recomputes(data, tmp_path):
    """hp/core.py takes BASE with ``from .consts import BASE``: editing hp/consts.py reaches the key
    and the values."""
    folder = tmp_path / "plugs"
    plugin = _plugin(folder, PACKAGED)
    (folder / "hp").mkdir()
    (folder / "hp" / "__init__.py").write_text("")
    (folder / "hp" / "core.py").write_text("from .consts import BASE\n\ndef scale(x):\n    return x * BASE\n")
    (folder / "hp" / "consts.py").write_text("BASE = 1.0\n")
    _edit_recomputes(data, tmp_path / "run", "pkg_w", plugin,
                     lambda: (folder / "hp" / "consts.py").write_text("BASE = 3.0\n"), 3)


OTHER_FOLDER = '''
import qualmet
from .helper_mod import FACTOR

@qualmet.metric(name="other_w", level="object", worse="low")
def other_w(ctx):
    return ctx.boxes[:, 2] * FACTOR
'''


def test_a_helpers_helper_is_reloaded_after_another_folder_used_the_same_helper_name(data, tmp_path):
    """Folder b has a helper_mod too; after a run of b's plugin, an edit to a's base_mod still gives new
    values under the new key."""
    a, b = tmp_path / "a", tmp_path / "b"
    plugin_a = _plugin(a, SCALED)
    (a / "helper_mod.py").write_text("from .base_mod import BASE\nFACTOR = BASE\n")
    (a / "base_mod.py").write_text("BASE = 1.0\n")
    b.mkdir()
    (b / "other.py").write_text(OTHER_FOLDER)
    (b / "helper_mod.py").write_text("FACTOR = 5.0\n")
    _edit_recomputes(data, tmp_path / "run", "scaled_w", plugin_a, lambda: (a / "base_mod.py").write_text("BASE = 3.0\n"), 3,
                     between=lambda: run_metrics(data, metrics=["other_w"], plugins=[b / "other.py"], workers=1,
                                                 progress=False))


CROWD = '''
import numpy as np
import qualmet

@qualmet.metric(name="crowd_w", level="object", worse="low")
def crowd_w(ctx):
    w = ctx.boxes[:, 2].copy()
    w[ctx.annotations["iscrowd"].to_numpy() == 1] = np.nan
    return w
'''


def test_a_change_to_iscrowd_or_an_extra_key_recomputes(data, tmp_path):
    plugin = _plugin(tmp_path / "plugs", CROWD)
    out = tmp_path / "run"
    names = ["crowd_w", "aspect_ratio"]
    first = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    assert first.objects["crowd_w"].notna().all()
    d = json.loads(Path(data).read_text())
    d["annotations"][0]["iscrowd"] = 1
    Path(data).write_text(json.dumps(d))
    second = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    assert second.info["counters"]["computed"] == {"crowd_w": 2, "aspect_ratio": 6}  # that chunk; the vectorised one
    assert second.objects["crowd_w"].isna().tolist() == [True] + [False] * (len(second.objects) - 1)
    # an extra key plugins can read: a new key is a new column in every frame's ctx.annotations, so
    # every chunk recomputes; then a change of its value recomputes that chunk only
    d["annotations"][1]["attributes"] = {"occluded": True}
    Path(data).write_text(json.dumps(d))
    third = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    assert third.info["counters"]["computed"]["crowd_w"] == 6
    d["annotations"][1]["attributes"] = {"occluded": False}
    Path(data).write_text(json.dumps(d))
    fourth = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    assert fourth.info["counters"]["computed"]["crowd_w"] == 2


VERSIONED = '''
import qualmet

@qualmet.metric(name="plus", level="object", worse="low")
def plus(ctx):
    return ctx.boxes[:, 2] + {add}
'''


def test_a_worker_that_loaded_an_older_plugin_reloads_it(data, tmp_path):
    """A pool (like a Dask worker) that outlives a run keeps what it imported; after the plugin file
    changes, its values must be the new code's, and only those may be cached."""
    class LongLived(LocalExecutor):  # its worker survives run_metrics' close, as a Dask cluster's do
        def close(self, cancel: bool = False) -> None:
            pass

    folder = tmp_path / "plugs"
    plugin = _plugin(folder, VERSIONED.format(add=1.0))
    ex = LongLived(1)
    try:
        old = run_metrics(data, metrics=["plus"], plugins=[plugin], out=tmp_path / "run", executor=ex, chunk_size=3,
                          progress=False)
        time.sleep(0.01)
        plugin.write_text(textwrap.dedent(VERSIONED.format(add=100.0)))
        new = run_metrics(data, metrics=["plus"], plugins=[plugin], out=tmp_path / "run", executor=ex, chunk_size=3,
                          progress=False)
    finally:
        LocalExecutor.close(ex)
    assert not new.errors and new.info["counters"]["computed"]["plus"] == 6
    assert np.allclose(new.objects["plus"], old.objects["plus"] + 99.0)


def test_a_worker_running_other_qualmet_code_refuses_the_chunk(data):
    from qualmet.formats import load_coco

    ds = load_coco(data)
    frames = [{"file_name": r.file_name, "width": r.width, "height": r.height, "image_id": r.id}
              for r in ds.images.itertuples()]
    task = ChunkTask(0, frames, ds.annotations, None, ["brightness"], (), str(ds.image_root), True,
                     qualmet_version="not-this-qualmet")
    with pytest.raises(QualmetError, match="runs other code than the caller for qualmet itself"):
        compute_chunk(task)
    task.qualmet_version = ""
    assert len(compute_chunk(task).frames) == len(frames)  # the same task, no expectation: computed


def test_a_chunk_split_after_a_worker_death_keeps_the_code_check(data):
    """The one-frame tasks a chunk is split into after its worker died carry the caller's metric
    keys and qualmet version (they lost them, so a stale worker computed those frames unchecked)."""
    from qualmet.compute import split_task
    from qualmet.formats import load_coco

    ds = load_coco(data)
    frames = [{"file_name": r.file_name, "width": r.width, "height": r.height, "image_id": r.id}
              for r in ds.images.itertuples()]
    task = ChunkTask(0, frames, ds.annotations, None, ["brightness"], (), str(ds.image_root), True,
                     metric_keys={"brightness": "k1"}, qualmet_version="not-this-qualmet")
    parts = split_task(task)
    assert [p.frames for p in parts] == [[fr] for fr in frames]
    assert [sorted(p.annotations["id"]) for p in parts] == [
        sorted(ds.annotations.loc[ds.annotations.image_id == fr["image_id"], "id"]) for fr in frames]
    assert all(p.metric_keys == {"brightness": "k1"} and p.qualmet_version == "not-this-qualmet" for p in parts)
    with pytest.raises(QualmetError, match="runs other code than the caller"):
        compute_chunk(parts[0])


SLOW = '''
import time
import qualmet

@qualmet.metric(name="slow", level="frame", needs={"pixels"}, worse="low")
def slow(ctx):
    time.sleep(30)
    return 0.0
'''


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux's")
def test_workers_end_when_the_main_process_is_killed(data, tmp_path):
    plugin = _plugin(tmp_path / "plugs", SLOW)
    code = (f"from qualmet.runner import run_metrics\n"
            f"run_metrics({str(data)!r}, metrics=['slow'], plugins=[{str(plugin)!r}], workers=2, chunk_size=1, "
            f"progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # orphans, if the test failed
            if _alive(w):
                os.kill(w, signal.SIGKILL)


INFINITE = '''
import numpy as np
import qualmet

@qualmet.metric(name="inf_obj", level="object", worse="low")
def inf_obj(ctx):
    return np.where(np.full(ctx.n_objects, ctx.image_id == 3), np.inf, 1.0)

@qualmet.metric(name="inf_vec", level="frame", worse="low", vectorised=True)
def inf_vec(annotations, images):
    return np.where(images["id"].to_numpy() == 1, -np.inf, 0.0)
'''


def test_an_infinite_value_is_an_error_not_a_value(data, tmp_path):
    plugin = _plugin(tmp_path / "plugs", INFINITE)
    run = run_metrics(data, metrics=["inf_obj", "inf_vec"], plugins=[plugin], workers=1, progress=False)
    assert not np.isinf(run.objects["inf_obj"]).any() and not np.isinf(run.frames["inf_vec"]).any()
    assert run.objects.loc[run.objects.image_id == 3, "inf_obj"].isna().all()
    assert (run.objects.loc[run.objects.image_id != 3, "inf_obj"] == 1.0).all()
    assert run.frames["inf_vec"].isna().all()  # one call for the whole data set: all of it fails
    assert {(e["metric"], e["image_id"]) for e in run.errors} == {("inf_obj", 3), ("inf_vec", None)}
    assert all("infinite value" in e["error"] for e in run.errors) and run.exit_code == 1


def test_an_empty_plugin_folder_is_an_error(data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_helpers.py").write_text("X = 1\n")
    with pytest.raises(QualmetError, match="has no .py files"):
        run_metrics(data, metrics=["aspect_ratio"], plugins=[tmp_path / "empty"], workers=1, progress=False)


def test_chunks_are_id_ranges_so_adding_or_removing_a_frame_recomputes_only_its_chunk(tmp_path):
    from qualmet.chunks import chunk_bounds

    assert chunk_bounds(np.arange(1, 7), 2).tolist() == [0, 2, 4, 6]
    assert chunk_bounds(np.arange(1, 101), 32).tolist() == [0, 32, 64, 96, 100]
    assert chunk_bounds(np.arange(2, 101), 32).tolist() == [0, 31, 63, 95, 99]  # id 1 gone: the same ranges
    sparse = np.arange(1, 101) * 1000  # ids 1000 apart: ranges of about 32 frames' worth of ids
    assert 16 <= np.diff(chunk_bounds(sparse, 32))[:-1].min() and np.diff(chunk_bounds(sparse, 32)).max() <= 64
    dense_cluster = np.r_[np.arange(1, 201), [10 ** 6]]  # one far id makes the spacing large; the cluster is cut
    assert np.diff(chunk_bounds(dense_cluster, 32)).max() <= 64
    assert chunk_bounds(np.array([], dtype=np.int64), 32).tolist() == [0]

    data = write_dataset(tmp_path / "ds", n=24)
    names = ["brightness", "aspect_ratio"]
    out = tmp_path / "run"
    full = run_metrics(data, metrics=names, out=out, workers=1, chunk_size=4, progress=False)
    d = json.loads(Path(data).read_text())
    d["images"] = d["images"][1:]  # frame 1 removed
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] != 1]
    Path(data).write_text(json.dumps(d))
    less = run_metrics(data, metrics=names, out=out, workers=1, chunk_size=4, progress=False)
    c = less.info["counters"]
    assert c["chunks"] == 6 and c["chunks_computed"] == 1 and c["cached"]["brightness"] == 20
    ref = full.frames[full.frames.image_id != 1].reset_index(drop=True)
    assert np.array_equal(less.frames["brightness"], ref["brightness"])


VEC_WEATHER = '''
import qualmet

@qualmet.metric(name="weather", level="frame", worse="high", vectorised=True)
def weather(annotations, images):
    return images["weather"].to_numpy(dtype=float)
'''


def test_an_image_extra_key_read_by_a_vectorised_metric_is_in_its_key(data, tmp_path):
    plugin = _plugin(tmp_path / "plugs", VEC_WEATHER)
    d = json.loads(Path(data).read_text())
    for im in d["images"]:
        im["weather"] = 1
    Path(data).write_text(json.dumps(d))
    out = tmp_path / "run"
    assert run_metrics(data, metrics=["weather"], plugins=[plugin], out=out, workers=1,
                       progress=False).frames["weather"].tolist() == [1.0] * 6
    d["images"][0]["weather"] = 5
    Path(data).write_text(json.dumps(d))
    again = run_metrics(data, metrics=["weather"], plugins=[plugin], out=out, workers=1, progress=False)
    assert again.frames["weather"].tolist() == [5.0] + [1.0] * 5


def test_chunk_bounds_of_ids_spread_over_the_whole_int64_range():
    from qualmet.chunks import chunk_bounds

    ids = np.array([12345, 3 * 10 ** 18, 6 * 10 ** 18, 9 * 10 ** 18], dtype=np.int64)
    b = chunk_bounds(ids, 32)
    assert b[0] == 0 and b[-1] == 4 and (np.diff(b) > 0).all()
