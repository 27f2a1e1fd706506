"""What a plugin may and may not do, and what it gets told: found by an audit of writing plugins.

A metric cannot change what other metrics see, sees only the inputs it declares, and gets a clear
recorded error (not a silently wrong or misaligned value) for every return value that is not one
real number per object or frame. Discovery registers every decorated function and tells when a
file or an installed package gives nothing.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.errors import QualmetError
from qualmet.formats import load_coco
from qualmet.context import MetricContext, private_copy
from qualmet.discovery import load_registry
from qualmet.runner import run_metrics
from qualmet.steps import dataset_hash

from .metric_helpers import write_dataset

OTHERS = ["black_white_ratio", "box_tightness_iou", "brightness", "class_color_consistency", "aspect_ratio", "area_relative"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), n=6)


@pytest.fixture(scope="module")
def clean(data):
    return run_metrics(data, metrics=OTHERS, workers=1, progress=False)


def plugin(path: Path, body: str) -> Path:
    path.write_text("import numpy as np\nimport pandas as pd\nimport qualmet\n" + textwrap.dedent(body))
    return path


def errors_of(run, metric: str) -> list[str]:
    return [e["error"] for e in run.errors if e["metric"] == metric]


def test_a_plugin_cannot_change_what_other_metrics_see(data, clean, tmp_path):
    """It changed ctx.boxes to xyxy and blanked image rows in place, or divided the annotations' w by
    100: every other metric after it computed (and cached) wrong values, exit 0."""
    p = plugin(tmp_path / "mutators.py", '''
        @qualmet.metric(name="aaa_inplace", level="object", needs={"pixels"})
        def aaa_inplace(ctx):
            ctx.boxes[:, 2:] += ctx.boxes[:, :2]
            ctx.image[:10] = 0
            return ctx.boxes[:, 0]

        @qualmet.metric(name="aaa_table", level="object")
        def aaa_table(ctx):
            a = ctx.annotations
            a["w"] = a["w"] / 100
            return a["w"].to_numpy()

        @qualmet.metric(name="aaa_vec", level="object", vectorised=True)
        def aaa_vec(annotations, images):
            annotations["w"] /= 100
            images["width"] = 1
            return annotations["w"]
        ''')
    run = run_metrics(data, metrics=["aaa_inplace", "aaa_table", "aaa_vec"] + OTHERS, plugins=[p], out=tmp_path / "r",
                      workers=1, progress=False)
    assert len(errors_of(run, "aaa_inplace")) == 6 and "read-only" in errors_of(run, "aaa_inplace")[0]
    for table in ("objects", "frames"):
        cols = [c for c in getattr(clean, table).columns]
        pd.testing.assert_frame_equal(getattr(run, table)[cols], getattr(clean, table)[cols])
    np.testing.assert_allclose(run.objects["aaa_vec"], run.objects["w"] / 100)  # its own copy changed, nothing else
    np.testing.assert_allclose(run.objects["aaa_table"], run.objects["w"] / 100)
    assert run.info["dataset"]["hash"] == dataset_hash(load_coco(data))  # run.json names the data set as it is


def test_table_copies_are_private_without_copy_on_write_too(monkeypatch):
    """pandas 2 (allowed by pyproject) has copy-on-write off by default: there a shallow copy shares
    the columns, and a plugin's in-place change reached every later metric and run.json's hash."""
    df = pd.DataFrame({"w": [10.0, 20.0], "h": [1.0, 2.0]})
    c = private_copy(df)
    c.loc[c["w"] > 15, "w"] = 0.0
    assert df["w"].tolist() == [10.0, 20.0]
    monkeypatch.setattr(pd, "__version__", "2.3.3")
    monkeypatch.setattr(pd, "get_option", lambda key: False)  # pandas 2's default for mode.copy_on_write
    c = private_copy(df)
    assert not np.shares_memory(c["w"].to_numpy(), df["w"].to_numpy())


def test_a_metric_sees_only_the_inputs_it_declares(data, tmp_path):
    """Run next to a pixel metric, one that read ctx.image without declaring it worked, and kept its
    cached value when the image changed."""
    p = plugin(tmp_path / "undeclared.py", '''
        @qualmet.metric(name="sneaky_pixels", level="frame")
        def sneaky_pixels(ctx):
            return float(ctx.image.mean())

        @qualmet.metric(name="sneaky_preds", level="frame")
        def sneaky_preds(ctx):
            return len(ctx.predictions)
        ''')
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}]))
    run = run_metrics(data, metrics=["sneaky_pixels", "sneaky_preds", "brightness", "missed_by_labels"], plugins=[p],
                      predictions=preds, workers=1, progress=False)
    assert "does not declare needs={'pixels'}" in errors_of(run, "sneaky_pixels")[0]
    assert "does not declare needs={'predictions'}" in errors_of(run, "sneaky_preds")[0]
    assert run.frames["brightness"].notna().all() and run.exit_code == 1


def test_sys_exit_in_a_metric_costs_only_that_metric(data, clean, tmp_path, capsys):
    p = plugin(tmp_path / "exits.py", '''
        import sys

        @qualmet.metric(name="quits", level="frame", needs={"pixels"})
        def quits(ctx):
            if ctx.image_id == 3:
                sys.exit(3)
            return 1.0
        ''')
    rc = main(["metrics", "run", str(data), "--plugins", str(p), "--metrics", "quits,brightness", "--out",
               str(tmp_path / "r"), "--workers", "1", "--no-progress"])
    assert rc == 1 and "quits failed on 1 frame(s); first: image 3" in capsys.readouterr().err
    frames = pd.read_parquet(tmp_path / "r" / "frames.parquet")
    assert frames["quits"].isna().tolist() == [False, False, True, False, False, False]
    np.testing.assert_array_equal(frames["brightness"], clean.frames["brightness"])


RETURNS = '''
@qualmet.metric(name="o_none", level="object")
def o_none(ctx):
    return None

@qualmet.metric(name="o_scalar", level="object")
def o_scalar(ctx):
    return 0.5

@qualmet.metric(name="o_text", level="object")
def o_text(ctx):
    return ["0.5"] * ctx.n_objects

@qualmet.metric(name="o_complex", level="object")
def o_complex(ctx):
    return np.ones(ctx.n_objects) * 1j

@qualmet.metric(name="o_series_reversed", level="object")
def o_series_reversed(ctx):  # labelled: each value belongs to the box its label names
    a = ctx.annotations
    return pd.Series(a["w"].to_numpy(), index=a.index[::-1])

@qualmet.metric(name="o_series_other_labels", level="object")
def o_series_other_labels(ctx):
    a = ctx.annotations
    return pd.Series(a["w"].to_numpy(), index=a["id"].to_numpy() + 1000)

@qualmet.metric(name="o_series_positions", level="object")
def o_series_positions(ctx):
    return pd.Series(ctx.annotations["w"].to_numpy())

@qualmet.metric(name="o_column", level="object")
def o_column(ctx):
    return ctx.annotations["w"].to_numpy()[:, None]

@qualmet.metric(name="o_nones", level="object")
def o_nones(ctx):
    return [None] + list(ctx.annotations["w"].to_numpy()[1:])

@qualmet.metric(name="o_series_ok", level="object")
def o_series_ok(ctx):
    return ctx.annotations["w"] * 2

@qualmet.metric(name="f_none", level="frame")
def f_none(ctx):
    return None

@qualmet.metric(name="f_text", level="frame")
def f_text(ctx):
    return "1.5"

@qualmet.metric(name="v_by_annotation_id", level="object", vectorised=True)
def v_by_annotation_id(annotations, images):
    return pd.Series(annotations["w"].to_numpy(), index=annotations["id"].to_numpy())

@qualmet.metric(name="v_frames_by_position", level="frame", vectorised=True)
def v_frames_by_position(annotations, images):
    return pd.Series(np.arange(len(images), dtype=float))

@qualmet.metric(name="v_frames_some_ids", level="frame", vectorised=True)
def v_frames_some_ids(annotations, images):
    return annotations[annotations["w"] > 35].groupby("image_id").size()

@qualmet.metric(name="v_column", level="object", vectorised=True)
def v_column(annotations, images):
    return annotations["w"].to_numpy()[:, None]

@qualmet.metric(name="v_nullable", level="object", vectorised=True)
def v_nullable(annotations, images):
    return annotations["w"].astype("Int64")
'''


def test_return_values_are_numbers_one_per_object_or_frame(data, tmp_path):
    """None, text, complex values, a scalar for an object metric and Series with other labels were
    stored (as NaN, as numbers, or shifted by a row) without an error."""
    p = tmp_path / "returns.py"
    p.write_text("import numpy as np\nimport pandas as pd\nimport qualmet\n" + RETURNS)
    names = ["o_none", "o_scalar", "o_text", "o_complex", "o_series_reversed", "o_series_ok", "f_none", "f_text",
             "v_by_annotation_id", "v_frames_by_position", "v_frames_some_ids", "v_nullable", "o_series_other_labels",
             "o_series_positions", "o_column", "o_nones", "v_column"]
    run = run_metrics(data, metrics=names, plugins=[p], workers=1, progress=False)
    expect = {"o_none": "returned None", "o_scalar": "returned shape (); ", "o_text": "returned list of text; a metric returns real numbers",
              "o_complex": "dtype complex128", "o_series_other_labels": "neither ctx.annotations.index nor 0..n-1",
              "f_none": "returned None", "f_text": "returned the text '1.5'; a metric returns real numbers",
              "v_by_annotation_id": "not a subset of the annotations table's index (first unknown label: 9)",
              "v_frames_by_position": "not a subset of image ids (first unknown label: 0)"}
    for name, words in expect.items():
        errs = errors_of(run, name)
        assert errs and all(words in e for e in errs), (name, errs[:1])
        col = run.objects[name] if name in run.objects else run.frames[name]
        assert col.isna().all(), name
    n_frames = {"o_none": 6, "o_scalar": 6, "f_none": 6, "v_by_annotation_id": 1, "o_series_other_labels": 6}
    # a Series is read by its labels, or as positions when its index is the default 0..n-1; (n, 1) columns
    # and None entries (NaN) are read as they were before the contract was written down
    o = run.objects
    swapped = o.groupby("image_id")["w"].transform(lambda w: w.to_numpy()[::-1])
    np.testing.assert_array_equal(o["o_series_reversed"], swapped)
    np.testing.assert_array_equal(o["o_series_positions"], o["w"])
    np.testing.assert_array_equal(o["o_column"], o["w"])
    np.testing.assert_array_equal(o["v_column"], o["w"])
    first = o.groupby("image_id").cumcount() == 0
    assert o.loc[first, "o_nones"].isna().all()
    np.testing.assert_array_equal(o.loc[~first, "o_nones"], o.loc[~first, "w"])
    for name, n in n_frames.items():
        assert len(errors_of(run, name)) == n, name
    np.testing.assert_array_equal(run.objects["o_series_ok"], run.objects["w"] * 2)
    np.testing.assert_array_equal(run.objects["v_nullable"], run.objects["w"])
    wide = run.objects[run.objects["w"] > 35].groupby("image_id").size()
    assert run.frames.set_index("image_id")["v_frames_some_ids"].to_dict() == {
        i: (float(wide[i]) if i in wide.index else pytest.approx(np.nan, nan_ok=True)) for i in range(1, 7)}


def test_summary_puts_the_frames_errors_before_the_finalize_error(data, tmp_path, capsys):
    p = plugin(tmp_path / "fin.py", '''
        def fin(vectors, annotations):
            return vectors[:, 0]

        @qualmet.metric(name="fz", level="object", finalize=fin)
        def fz(ctx):
            return np.ones(ctx.n_objects)  # 1-D: a finalize metric returns (n_objects, k)
        ''')
    rc = main(["metrics", "run", str(data), "--plugins", str(p), "--metrics", "fz", "--out", str(tmp_path / "r"),
               "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error: metric fz")]
    assert "failed on 6 frame(s)" in lines[0] and "returns (n_objects, k)" in lines[0]
    assert "whole data set" in lines[1]


def test_discovery_registers_every_decorated_function_and_helpers_import(tmp_path, monkeypatch):
    folder = tmp_path / "plugs"
    folder.mkdir()
    (folder / "_shared.py").write_text("FACTOR = 3.0\n")
    plugin(folder / "defs.py", '''
        from ._shared import FACTOR

        def make():
            @qualmet.metric(name="made_inside", level="object", vectorised=True)
            def inner(annotations, images):
                return annotations["w"] * FACTOR
            return inner

        make()

        @qualmet.metric(name="first_of_two", level="object", vectorised=True)
        def same(annotations, images):
            return annotations["w"]

        @qualmet.metric(name="second_of_two", level="object", vectorised=True)
        def same(annotations, images):
            return annotations["h"]
        ''')
    monkeypatch.chdir(tmp_path.anchor)  # the helper is found beside the plugin, not through the working folder
    reg = load_registry([folder], entry_points=False)
    assert {"made_inside", "first_of_two", "second_of_two"} <= set(reg.metrics)
    empty = tmp_path / "nothing.py"
    empty.write_text("X = 1\n")
    with pytest.raises(QualmetError, match="nothing.py: defines no metric"):
        load_registry([empty], entry_points=False)
    quits = tmp_path / "quits.py"
    quits.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(QualmetError, match="quits.py: plugin failed to import: SystemExit: 3"):
        load_registry([quits], entry_points=False)


def test_two_plugin_folders_each_import_their_own_helper(tmp_path):
    """Each folder is a package of its own: a's plugin computes with a's _shared.py, b's with b's."""
    for name, factor in (("a", 1.0), ("b", 2.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "_shared.py").write_text(f"FACTOR = {factor}\n")
        plugin(d / f"{name}.py", f'''
            from ._shared import FACTOR

            @qualmet.metric(name="{name}_factor", level="object", vectorised=True)
            def {name}_factor(annotations, images):
                return annotations["w"] * 0 + FACTOR
            ''')
    data = write_dataset(tmp_path / "ds", n=2)
    run = run_metrics(data, metrics=["a_factor", "b_factor"], plugins=[tmp_path / "a", tmp_path / "b"], workers=1,
                      progress=False)
    assert run.objects["a_factor"].eq(1.0).all() and run.objects["b_factor"].eq(2.0).all()


def test_a_reloaded_metric_module_does_not_clash_with_itself():
    import importlib

    import qualmet.builtin_metrics.brightness as b

    importlib.reload(b)
    assert "brightness" in load_registry(entry_points=False).metrics


def test_intermediates_are_shared_by_metrics_with_different_needs(data, tmp_path, monkeypatch):
    import cv2

    p = plugin(tmp_path / "hsv.py", '''
        @qualmet.metric(name="hsv_a", level="frame", needs={"pixels"})
        def hsv_a(ctx):
            return float(ctx.hsv[..., 2].mean())

        @qualmet.metric(name="hsv_b", level="frame", needs={"pixels", "predictions"})
        def hsv_b(ctx):
            return float(ctx.hsv[..., 1].mean()) + len(ctx.predictions)
        ''')
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}]))
    calls = []
    real = cv2.cvtColor
    monkeypatch.setattr(cv2, "cvtColor", lambda a, code, *r: (calls.append(code), real(a, code, *r))[1])
    run = run_metrics(data, metrics=["hsv_a", "hsv_b"], plugins=[p], predictions=preds, workers=1, progress=False)
    assert run.exit_code == 0 and calls.count(cv2.COLOR_RGB2HSV) == 6  # once per frame, not once per needs


def test_a_broken_installed_plugin_is_a_warning_not_the_end(data, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    info = site / "broken_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[qualmet.metrics]\nbroken = module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(site))
    rc = main(["metrics", "run", str(data), "--metrics", "brightness", "--out", str(tmp_path / "r"), "--workers", "1",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0 and "warning: entry point 'broken'" in out and "ModuleNotFoundError" in out
    assert json.loads((tmp_path / "r" / "run.json").read_text())["plugin_problems"][0].startswith("entry point 'broken'")
    assert main(["metrics", "list"]) == 0
    assert "qualmet: warning: entry point 'broken'" in capsys.readouterr().err
    with pytest.raises(QualmetError, match="unknown metric.*broken_metric.*entry point 'broken'.*failed to load"):
        load_registry().select(["broken_metric"])


def test_metric_selection_given_as_text(data, tmp_path, capsys):
    """The Python API split a string into letters ('unknown metric(s) b, r, i...'); --metrics "" ran everything."""
    run = run_metrics(data, metrics="brightness", workers=1, progress=False)
    assert [c for c in run.frames.columns if c not in ("image_id", "file_name", "width", "height")] == ["brightness"]
    p = plugin(tmp_path / "one.py", '''
        @qualmet.metric(name="one", level="frame")
        def one(ctx):
            return 1.0
        ''')
    assert run_metrics(data, metrics=["one"], plugins=str(p), workers=1, progress=False).frames["one"].eq(1).all()
    assert main(["metrics", "run", str(data), "--metrics", "", "--out", str(tmp_path / "r")]) == 2
    assert "no metric named" in capsys.readouterr().err


def test_context_edges_zero_size_boxes_and_negative_grid_start():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    boxes = np.array([[3.5, 4.5, 0.0, 0.0], [2.0, 2.0, 0.0, 5.0], [1.0, 1.0, 4.0, 3.0]])
    ctx = MetricContext(1, "f.png", 12, 10, (None, 0, 3), image=img, boxes=boxes)
    b = ctx.boxes_int
    assert (b[0, 2], b[0, 3]) == (b[0, 0], b[0, 1]) and b[1, 2] == b[1, 0]  # no pixel: x1 == x2
    assert ctx.crop(0).size == 0 and ctx.crop(2).shape == (3, 4, 3)
    np.testing.assert_array_equal(ctx.grid(-2, -1, 4, 4, 1), img[0:4, 0:4])
    np.testing.assert_array_equal(ctx.grid(-2, -1, 6, 6, 2), img[0:6:2, 0:6:2])
    assert not ctx.image.flags.writeable and img.flags.writeable  # the caller's array stays writeable


def test_object_proximity_of_a_box_without_area_is_undefined(tmp_path):
    root = tmp_path / "ds"
    data = write_dataset(root, n=2, extra_annotations=[
        {"id": 99, "image_id": 1, "category_id": 1, "bbox": [90, 80, 0, 0], "area": 0, "iscrowd": 0}])
    run = run_metrics(data, metrics=["object_proximity"], workers=1, progress=False)
    v = run.objects.set_index("annotation_id")["object_proximity"]
    assert np.isnan(v[99]) and np.isfinite(v[1])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
