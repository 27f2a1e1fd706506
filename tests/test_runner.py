"""The metric runner: outputs, decode-once, errors and skipped frames, cache/resume, parallel == serial."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import qualmet.imageio
from qualmet.atomic import sha256_file
from qualmet.cli import main
from qualmet.metric_tables import OBJECT_BASE
from qualmet.commands.metrics import summarise
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset

PIXEL = ["brightness", "sharpness", "black_white_ratio", "box_tightness_iou", "class_color_consistency"]
LABEL = ["aspect_ratio", "object_count", "max_iou_other"]

PLUGIN = '''
import os
import numpy as np
import qualmet

@qualmet.metric(name="fragile", level="object", needs={{"pixels"}}, worse="low", version="{version}")
def fragile(ctx):
    if ctx.image_id == 2:
        raise RuntimeError("cannot handle frame two")
    if os.environ.get("QUALMET_TEST_INTERRUPT") and ctx.image_id == 4:
        raise KeyboardInterrupt
    return ctx.boxes[:, 2] * 0 + ctx.image_id

@qualmet.metric(name="frame_mean", level="frame", needs={{"pixels"}}, worse="low")
def frame_mean(ctx):
    return float(ctx.image.mean())
'''


def write_plugin(path: Path, version: str = "1") -> Path:
    path.write_text(textwrap.dedent(PLUGIN.format(version=version)))
    return path


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "ds", n=6)


def test_outputs_columns_checksums_and_run_json(data, tmp_path):
    out = tmp_path / "run"
    run = run_metrics(data, metrics=PIXEL + LABEL, out=out, workers=1, progress=False)
    objs, frames = pd.read_parquet(out / "objects.parquet"), pd.read_parquet(out / "frames.parquet")
    assert list(objs.columns) == OBJECT_BASE + ["black_white_ratio", "box_tightness_iou", "class_color_consistency",
                                                "aspect_ratio", "max_iou_other"]
    assert list(frames.columns) == ["image_id", "file_name", "width", "height", "brightness", "sharpness", "object_count"]
    assert len(objs) == 9 and len(frames) == 6
    pd.testing.assert_frame_equal(objs, run.objects)
    pd.testing.assert_frame_equal(frames, run.frames)
    assert objs["black_white_ratio"].between(0, 1).all() and objs["box_tightness_iou"].notna().all()
    assert objs["class_color_consistency"].notna().all()  # finalised after all chunks
    info = json.loads((out / "run.json").read_text())
    assert info["outputs"]["objects.parquet"]["sha256"] == sha256_file(out / "objects.parquet")
    assert info["outputs"]["frames.parquet"]["sha256"] == sha256_file(out / "frames.parquet")
    assert {m["name"]: m["version"] for m in info["metrics"]} == {m: "1" for m in PIXEL + LABEL}
    assert info["dataset"]["hash"] and info["errors"] == [] and info["skipped_frames"] == []
    assert cv2.__version__.startswith(".".join(info["environment"]["opencv"].split(".")[:3]))
    assert info["environment"]["numpy"] == np.__version__
    assert run.exit_code == 0


def test_each_image_decoded_once_for_all_pixel_metrics(data, tmp_path, monkeypatch):
    calls = []
    real = qualmet.imageio.read_image
    monkeypatch.setattr(qualmet.imageio, "read_image", lambda p: calls.append(Path(p).name) or real(p))
    run = run_metrics(data, metrics=PIXEL, workers=1, progress=False, chunk_size=4)
    assert sorted(calls) == sorted(f"f{i}.png" for i in range(1, 7))
    assert run.info["counters"]["decodes"] == 6
    calls.clear()
    run_metrics(data, metrics=LABEL, workers=1, progress=False)
    assert calls == []  # label-only metrics never decode


def test_raising_plugin_gives_nan_error_and_exit_code(data, tmp_path, capsys):
    plugin = write_plugin(tmp_path / "plug.py")
    out = tmp_path / "run"
    rc = main(["metrics", "run", str(data), "--plugins", str(plugin), "--metrics", "fragile,brightness",
               "--out", str(out), "--workers", "1", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "fragile failed on 1 frame" in err
    assert f"RuntimeError: cannot handle frame two (at {plugin}:9 in fragile)" in err  # the raise line
    objs = pd.read_parquet(out / "objects.parquet")
    assert objs.loc[objs.image_id == 2, "fragile"].isna().all()
    assert (objs.loc[objs.image_id != 2, "fragile"] == objs.loc[objs.image_id != 2, "image_id"]).all()
    info = json.loads((out / "run.json").read_text())
    assert info["errors"] == [{"metric": "fragile", "image_id": 2, "file_name": "f2.png",
                               "error": "RuntimeError: cannot handle frame two", "where": f"{plugin}:9 in fragile"}]
    assert info["errors_by_metric"] == {"fragile": 1}
    assert info["plugin_sources"] == [str(plugin.resolve())]
    assert "recorded with cached values" not in err
    # the same run again: the error comes from the cache, and the summary says how to retry
    assert main(["metrics", "run", str(data), "--plugins", str(plugin), "--metrics", "fragile,aspect_ratio",
                 "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("6 frames, 9 objects, 2 metrics; 1 chunks: 0 computed, 1 from the cache, 0 images decoded; "
                          "label-only metrics: 1 computed, 0 from the cache;")
    assert "[all of them recorded with cached values: bump the metric's version, or delete the run's chunks/" in err
    assert json.loads((out / "run.json").read_text())["errors"][0]["cached"] is True


def test_an_error_names_the_line_in_the_plugins_code_that_raised_it(data, tmp_path):
    """The innermost frame of the plugin's own code, through a helper and past numpy; none for a
    wrong return value, which qualmet's check finds after the plugin returned."""
    (tmp_path / "plug").mkdir()
    plugin = tmp_path / "plug" / "where.py"
    plugin.write_text(textwrap.dedent('''
        import numpy as np
        import qualmet

        def _second_box(ctx):
            return np.take(ctx.boxes[:, 2], 1)

        @qualmet.metric(name="deep", level="frame", worse="low")
        def deep(ctx):
            return _second_box(ctx)

        @qualmet.metric(name="short", level="object", worse="low")
        def short(ctx):
            return [1.0, 2.0, 3.0]

        @qualmet.metric(name="undeclared", level="frame", worse="low")
        def undeclared(ctx):
            return float(ctx.image.mean())

        class Lazy:
            def __array__(self, dtype=None, copy=None):
                raise RuntimeError("no array")

        @qualmet.metric(name="lazy", level="frame", worse="low")
        def lazy(ctx):
            return Lazy()

        import sys
        sys.path.insert(0, LIB)
        import outside_lib

        @qualmet.metric(name="via_lib", level="frame", worse="low")
        def via_lib(ctx):
            return outside_lib.lookup({})
    ''').replace("LIB", repr(str(tmp_path / "lib"))))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "outside_lib.py").write_text("def lookup(d):\n    return d['size']\n")
    run = run_metrics(data, metrics=["deep", "short", "undeclared", "lazy", "via_lib"], plugins=[plugin], workers=1,
                      progress=False)
    where = {e["metric"]: e["where"] for e in run.errors}
    # the plugin's own lines; none where qualmet's check of a returned value failed (even in code of the
    # plugin's file that the check called); a library outside the plugin's folder is not the plugin's code
    assert where == {"deep": f"{plugin}:6 in _second_box", "short": None, "undeclared": f"{plugin}:18 in undeclared",
                     "lazy": None, "via_lib": f"{plugin}:34 in via_lib"}
    assert f"(at {plugin}:6 in _second_box)" in summarise(run)


def test_unreadable_and_unsafe_images_are_skipped_with_reason(tmp_path):
    extra = [{"id": 7, "file_name": "broken.png", "width": 120, "height": 96},
             {"id": 8, "file_name": "../outside.png", "width": 120, "height": 96}]
    extra_anns = [{"id": 100, "image_id": 7, "category_id": 1, "bbox": [1, 1, 20, 10]},
                  {"id": 101, "image_id": 8, "category_id": 1, "bbox": [1, 1, 20, 20]},
                  {"id": 102, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}]  # unloadable: no image 99
    data = write_dataset(tmp_path / "ds", n=3, extra_images=extra, extra_annotations=extra_anns)
    (tmp_path / "ds" / "images" / "broken.png").write_bytes(b"not an image")
    run = run_metrics(data, metrics=["black_white_ratio", "brightness", "aspect_ratio"], out=tmp_path / "run",
                      workers=1, progress=False)
    skipped = {s["image_id"]: s["reason"] for s in run.skipped_frames}
    assert set(skipped) == {7, 8}
    assert "broken.png" in skipped[7] and "not a decodable image" in skipped[7]
    assert "outside" in skipped[8] and "image root" in skipped[8]
    o = run.objects.set_index("annotation_id")
    assert math.isnan(o.loc[100, "black_white_ratio"]) and o.loc[100, "aspect_ratio"] == 2.0  # labels still measured
    assert run.frames.set_index("image_id").loc[[1, 2, 3], "brightness"].notna().all()
    assert run.info["counters"]["decodes"] == 3  # the images decoded, not the five tried
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(info["dataset"]["skipped_items"]) == 1 and "99" in info["dataset"]["skipped_items"][0]["message"]
    assert run.exit_code == 1


def test_resume_recomputes_nothing_and_version_change_only_that_metric(data, tmp_path):
    plugin = write_plugin(tmp_path / "plug.py")
    out = tmp_path / "run"
    names = ["fragile", "frame_mean", "black_white_ratio", "aspect_ratio"]
    first = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    assert first.info["counters"]["computed"] == {n: 6 for n in names}
    second = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    c = second.info["counters"]
    assert c["chunks_computed"] == 0 and c["decodes"] == 0
    assert c["computed"] == {n: 0 for n in names} and c["cached"] == {n: 6 for n in names}
    pd.testing.assert_frame_equal(first.objects, second.objects)
    pd.testing.assert_frame_equal(first.frames, second.frames)
    assert second.errors == [{**e, "cached": True} for e in first.errors]  # the recorded error comes back from the cache

    write_plugin(plugin, version="2")
    third = run_metrics(data, metrics=names, plugins=[plugin], out=out, workers=1, chunk_size=2, progress=False)
    c = third.info["counters"]
    # the file changed, so both metrics it defines are recomputed; the built-ins are not
    assert c["computed"] == {"fragile": 6, "frame_mean": 6, "black_white_ratio": 0, "aspect_ratio": 0}
    assert {m["name"]: m["version"] for m in third.info["metrics"]}["fragile"] == "2"
    fourth = run_metrics(data, metrics=names + ["brightness"], plugins=[plugin], out=out, workers=1, chunk_size=2,
                         progress=False)
    assert fourth.info["counters"]["computed"] == {**{n: 0 for n in names}, "brightness": 6}


def test_another_qualmet_version_recomputes_every_metric(data, tmp_path, monkeypatch):
    """Cached values are keyed by qualmet's version (a release that changes the context, the box
    helpers or the decoder must not reuse old values); the same version reads them back."""
    import qualmet.runner

    out = tmp_path / "run"
    names = ["black_white_ratio", "brightness", "aspect_ratio"]
    run_metrics(data, metrics=names, out=out, workers=1, chunk_size=2, progress=False)
    monkeypatch.setattr(qualmet.runner, "__version__", qualmet.runner.__version__ + ".post1")
    again = run_metrics(data, metrics=names, out=out, workers=1, chunk_size=2, progress=False)
    assert again.info["counters"]["computed"] == {n: 6 for n in names}
    monkeypatch.undo()
    assert run_metrics(data, metrics=names, out=out, workers=1, chunk_size=2,
                       progress=False).info["counters"]["computed"] == {n: 0 for n in names}


def test_builtin_metrics_import_only_the_public_plugin_api():
    """The built-ins are written as a user would write a plugin: ``qualmet`` itself and the public
    ``qualmet.boxes`` helpers, nothing else from qualmet."""
    import ast

    root = Path(__file__).resolve().parents[1] / "metrics"
    seen = set()
    for f in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                if n.split(".")[0] == "qualmet":
                    assert n in ("qualmet", "qualmet.boxes"), f"{f.name} imports {n}"
                    seen.add(n)
    assert seen == {"qualmet", "qualmet.boxes"}


def test_interrupted_run_resumes_without_recomputing_finished_chunks(data, tmp_path, monkeypatch):
    plugin = write_plugin(tmp_path / "plug.py")
    out = tmp_path / "run"
    monkeypatch.setenv("QUALMET_TEST_INTERRUPT", "1")
    with pytest.raises(KeyboardInterrupt):
        run_metrics(data, metrics=["fragile"], plugins=[plugin], out=out, workers=1, chunk_size=1, progress=False)
    assert len(list((out / "chunks").glob("*.parquet"))) == 3  # frames 1-3 finished and were kept
    assert not (out / "objects.parquet").exists()
    monkeypatch.delenv("QUALMET_TEST_INTERRUPT")
    run = run_metrics(data, metrics=["fragile"], plugins=[plugin], out=out, workers=1, chunk_size=1, progress=False)
    assert run.info["counters"]["chunks_computed"] == 3 and run.info["counters"]["cached"]["fragile"] == 3
    assert run.objects.loc[run.objects.image_id != 2, "fragile"].notna().all()


def test_killed_run_resumes(data, tmp_path):
    """SIGKILL in the middle: the finished chunk files are intact and reused."""
    out = tmp_path / "run"
    code = f"""
import os, signal, qualmet.computing as r
orig = r.write_chunk
n = [0]
def w(*a, **k):
    orig(*a, **k); n[0] += 1
    if n[0] == 2: os.kill(os.getpid(), signal.SIGKILL)
r.write_chunk = w
import qualmet.runner
qualmet.runner.run_metrics({str(data)!r}, metrics=["brightness", "aspect_ratio"], out={str(out)!r}, workers=1, chunk_size=2, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9
    run = run_metrics(data, metrics=["brightness", "aspect_ratio"], out=out, workers=1, chunk_size=2, progress=False)
    assert run.info["counters"]["cached"]["brightness"] == 4 and run.info["counters"]["computed"]["brightness"] == 2
    assert run.frames["brightness"].notna().all()


def test_parallel_equals_serial(data, tmp_path):
    plugin = write_plugin(tmp_path / "plug.py")
    names = PIXEL + LABEL + ["fragile"]
    serial = run_metrics(data, metrics=names, plugins=[plugin], workers=1, chunk_size=2, progress=False)
    parallel = run_metrics(data, metrics=names, plugins=[plugin], workers=2, chunk_size=2, progress=False,
                           out=tmp_path / "par")
    pd.testing.assert_frame_equal(serial.objects, parallel.objects)
    pd.testing.assert_frame_equal(serial.frames, parallel.frames)
    assert serial.errors == parallel.errors and len(parallel.errors) == 1


def test_predictions_metrics(data, tmp_path):
    preds = [{"image_id": 1, "category_id": 2, "bbox": [13, 12, 40, 30], "score": 0.8},
             {"image_id": 1, "category_id": 1, "bbox": [80, 60, 10, 10], "score": 0.9}]
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(preds))
    run = run_metrics(data, predictions=p, metrics=["confidence", "missed_by_labels"], workers=1, progress=False)
    assert run.objects.loc[run.objects.annotation_id == 1, "confidence"].item() == 0.8
    assert run.frames.set_index("image_id")["missed_by_labels"].to_dict() == {1: 1.0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0}
    all_default = run_metrics(data, workers=1, progress=False)  # no predictions: those metrics are left out
    assert "confidence" not in all_default.objects and "sharpness" in all_default.frames
    from qualmet.errors import QualmetError

    with pytest.raises(QualmetError, match="need predictions"):
        run_metrics(data, metrics=["confidence"], workers=1, progress=False)


def test_metrics_run_does_not_import_torch(data, tmp_path):
    code = (f"import sys; from qualmet.cli import main; "
            f"rc = main(['metrics', 'run', {str(data)!r}, '--out', {str(tmp_path / 'r')!r}, '--workers', '1', '--no-progress']); "
            f"print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH 0", proc.stderr


KILLER = '''
import os
import signal
import qualmet

@qualmet.metric(name="killer", level="frame", needs={"pixels"}, worse="low")
def killer(ctx):
    if ctx.image_id == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer or a native crash would
    return float(ctx.image_id)
'''


def _kill_on_three(t):
    import os
    import signal

    if t == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return t * 10


def test_local_executor_reports_only_the_task_that_kills_its_worker():
    from qualmet.executors import LocalExecutor, WorkerDied

    ex = LocalExecutor(2)
    try:
        got = dict(ex.map_unordered(_kill_on_three, range(8)))
    finally:
        ex.close()
    assert sorted(got) == list(range(8))
    assert isinstance(got[3], WorkerDied) and "signal 9" in str(got[3])
    assert {t: r for t, r in got.items() if t != 3} == {t: t * 10 for t in range(8) if t != 3}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_worker_killed_on_one_frame_costs_only_that_frame(data, tmp_path, capsys):
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER)
    names = ["killer", "brightness", "box_tightness_iou", "aspect_ratio"]
    out = tmp_path / "run"
    rc = main(["metrics", "run", str(data), "--plugins", str(plugin), "--metrics", ",".join(names),
               "--out", str(out), "--workers", "2", "--chunk-size", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "image 3 (f3.png): WorkerDied: worker process died (killed by signal 9" in err
    frames, objs = pd.read_parquet(out / "frames.parquet"), pd.read_parquet(out / "objects.parquet")
    # frame 3's per-frame metrics are NaN, its chunk-mate (frame 4) and every other frame are computed
    assert frames.set_index("image_id")["killer"].isna().tolist() == [False, False, True, False, False, False]
    ref = run_metrics(data, metrics=["brightness", "box_tightness_iou", "aspect_ratio"], workers=1, progress=False)
    ok_f, ok_o = frames.image_id != 3, objs.image_id != 3
    assert np.array_equal(frames.loc[ok_f, "brightness"], ref.frames.loc[ok_f, "brightness"])
    assert np.array_equal(objs.loc[ok_o, "box_tightness_iou"], ref.objects.loc[ok_o, "box_tightness_iou"])
    assert objs["aspect_ratio"].notna().all()  # label-only, vectorised: not touched
    assert objs.loc[~ok_o, "box_tightness_iou"].isna().all()
    info = json.loads((out / "run.json").read_text())
    assert {(e["metric"], e["image_id"]) for e in info["errors"]} == {("killer", 3), ("brightness", 3), ("box_tightness_iou", 3)}
    assert info["counters"]["chunks_failed"] == 1 and info["counters"]["chunks_computed"] == 2
    # the rerun takes the two good chunks from the cache and tries the failed one again
    rc = main(["metrics", "run", str(data), "--plugins", str(plugin), "--metrics", ",".join(names),
               "--out", str(out), "--workers", "2", "--chunk-size", "2", "--no-progress"])
    assert rc == 1 and "3 chunks: 0 computed, 2 from the cache, 1 failed" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "frames.parquet"), frames)


def test_summary_of_a_label_only_run_with_a_failing_vectorised_metric(data, tmp_path, capsys):
    plugin = tmp_path / "vec.py"
    plugin.write_text(textwrap.dedent('''
        import qualmet

        @qualmet.metric(name="vbad", level="object", worse="low", vectorised=True)
        def vbad(annotations, images):
            raise KeyError("no such column")
    '''))
    rc = main(["metrics", "run", str(data), "--plugins", str(plugin), "--metrics", "vbad,aspect_ratio",
               "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "; no per-frame work; label-only metrics: 2 computed, 0 from the cache;" in err
    assert "chunks" not in err
    assert "error: metric vbad failed on the whole data set: KeyError: 'no such column'" in err
    objs = pd.read_parquet(tmp_path / "run" / "objects.parquet")
    assert objs["vbad"].isna().all() and objs["aspect_ratio"].notna().all()


class _InterruptedExecutor:
    """Ctrl-C arrives while chunks run, and shutting the executor down then fails too (a Dask cluster
    under load can): the interruption is what the run reports."""

    closed: list = []

    def map_unordered(self, fn, tasks):
        yield from ()
        raise KeyboardInterrupt

    def close(self, cancel=False):
        self.closed.append(cancel)
        raise RuntimeError("cluster close failed")


def test_a_failing_shutdown_does_not_hide_the_interrupt(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_metrics(data, metrics=["brightness"], out=tmp_path / "run", executor=_InterruptedExecutor(), progress=False)
    assert _InterruptedExecutor.closed == [True]  # cancelled once, not closed again
