"""Plugin discovery: built-ins, a user file, an installed package's entry point, clashes, ``metrics list``."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qualmet.cli import main
from qualmet.errors import QualmetError
from qualmet.discovery import load_registry
from qualmet.plugin import metric
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset

USER_PLUGIN = '''
"""A user's plugin file."""
import qualmet

@qualmet.metric(name="box_height", level="object", worse="low", vectorised=True, description="box height in px")
def box_height(annotations, images):
    return annotations["h"]

@qualmet.metric(name="red_mean", level="frame", needs={"pixels"}, worse="low", version="3")
def red_mean(ctx):
    """mean of the red channel"""
    return float(ctx.image[..., 0].mean())
'''

EP_MODULE = '''
import qualmet

@qualmet.metric(name="{name}", level="object", worse="high", description="from an installed package")
def ep_metric(ctx):
    return ctx.boxes[:, 2] * 2
'''


def make_installed_package(root: Path, name: str = "ep_width2", pkg: str = "qm_ext") -> Path:
    """A tiny 'installed' distribution: a package plus a dist-info with a qualmet.metrics entry point."""
    (root / pkg).mkdir(parents=True)
    (root / pkg / "__init__.py").write_text(textwrap.dedent(EP_MODULE.format(name=name)))
    info = root / f"{pkg}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[qualmet.metrics]\nwidth_twice = {pkg}\n")
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = make_installed_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_user_file_and_entry_point_run_together(tmp_path, installed):
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(USER_PLUGIN)
    reg = load_registry([plugin])
    assert reg["box_height"].source == str(plugin.resolve())
    assert "width_twice" in reg["ep_width2"].source and "qm_ext" in reg["ep_width2"].source
    assert reg["aspect_ratio"].source.startswith("builtin")
    assert reg["red_mean"].description == "mean of the red channel" and reg["red_mean"].version == "3"
    data = write_dataset(tmp_path / "ds", n=4)
    run = run_metrics(data, metrics=["box_height", "red_mean", "ep_width2", "aspect_ratio"], plugins=[plugin],
                      workers=2, chunk_size=2, progress=False)  # workers load the plugins themselves
    o = run.objects
    assert (o["box_height"] == o["h"]).all() and (o["ep_width2"] == 2 * o["w"]).all()
    assert (o["aspect_ratio"] == o["w"] / o["h"]).all()
    assert run.frames["red_mean"].between(0, 255).all() and run.errors == []


def test_folder_of_plugins(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "a.py").write_text(USER_PLUGIN)
    (d / "_private.py").write_text("raise RuntimeError('not a plugin')")
    reg = load_registry([d], entry_points=False)
    assert "box_height" in reg and "red_mean" in reg
    # the same file reached through its folder and by name is loaded once, not a clash with itself
    both = load_registry([d, d / "a.py"], entry_points=False)
    assert both["box_height"].source == str((d / "a.py").resolve())
    (d / "empty.py").write_text("X = 1\n")  # named on its own, a file without a metric is an error, folder or not
    with pytest.raises(QualmetError, match=r"empty\.py: defines no metric"):
        load_registry([d, d / "empty.py"], entry_points=False)
    (d / "empty.py").unlink()
    (d / "b.py").write_text(USER_PLUGIN)  # a second file defining the same names still clashes
    with pytest.raises(QualmetError, match=r"'(box_height|red_mean)' is defined by .*a\.py and by .*b\.py; rename one"):
        load_registry([d, d / "a.py"], entry_points=False)


def test_name_clash_names_both_sources(tmp_path, installed):
    clash = tmp_path / "clash.py"
    clash.write_text(USER_PLUGIN.replace('name="box_height"', 'name="aspect_ratio"'))
    with pytest.raises(QualmetError) as e:
        load_registry([clash])
    msg = str(e.value)
    assert "'aspect_ratio'" in msg and "builtin (qualmet.builtin_metrics.aspect_ratio)" in msg and str(clash.resolve()) in msg
    clash.write_text(USER_PLUGIN.replace('name="box_height"', 'name="ep_width2"'))
    with pytest.raises(QualmetError, match=r"entry point 'width_twice'.*clash\.py"):
        load_registry([clash])


def test_metrics_list_output(tmp_path, installed, capsys):
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(USER_PLUGIN)
    assert main(["metrics", "list", "--plugins", str(plugin)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["NAME", "LEVEL", "NEEDS", "WORSE", "VER"] and "SOURCE" in out[0]
    rows = {line.split()[0]: line for line in out[1:]}
    assert {"box_tightness", "black_white_ratio", "class_color_consistency", "box_height", "ep_width2"} <= set(rows)
    assert rows["red_mean"].split()[1:5] == ["frame", "pixels", "low", "3"]
    assert rows["confidence"].split()[1:4] == ["object", "predictions", "low"]
    assert str(plugin.resolve()) in rows["box_height"]
    assert "builtin" in rows["sharpness"]


def test_decorator_refuses_bad_declarations():
    with pytest.raises(QualmetError, match="level"):
        metric(name="m", level="pixel")
    with pytest.raises(QualmetError, match="worse"):
        metric(name="m", level="object", worse="bad")
    with pytest.raises(QualmetError, match="needs"):
        metric(name="m", level="object", needs={"gpu"})
    with pytest.raises(QualmetError, match="vectorised"):
        metric(name="m", level="object", needs={"pixels"}, vectorised=True)
    # a name that is an output column replaced it (x: the box's x; image_id: every value NaN) or crashed
    # the parquet writer after the whole run
    for taken in ("x", "image_id", "annotation_id", "width", "file_name", "__partial__m"):
        with pytest.raises(QualmetError, match=f"metric name '{taken}' is taken by a column"):
            metric(name=taken, level="object")
    with pytest.raises(QualmetError, match="metric 'm': needs must be a set"):
        metric(name="m", level="object", needs=None)
    with pytest.raises(QualmetError, match="metric 'm': description must be text"):
        metric(name="m", level="object", description=None)
    with pytest.raises(QualmetError, match="metric 'm': finalize must be a function"):
        metric(name="m", level="object", finalize=3)
    with pytest.raises(QualmetError, match=r"@qualmet.metric needs its arguments: .* above f$"):
        @metric  # noqa: the mistake under test: the decorator without its call
        def f(ctx):
            return 1.0
    with pytest.raises(QualmetError, match=r"metric 'm': level must be one of \('object', 'frame'\), got None"):
        metric(name="m")


def test_unknown_metric_and_missing_plugin(tmp_path):
    with pytest.raises(QualmetError, match="unknown metric.*nope.*available"):
        load_registry(entry_points=False).select(["nope"])
    with pytest.raises(QualmetError, match=r"unknown metric\(s\) 'sharpnes' \(did you mean 'sharpness'\?\), 'zzz';"
                                           r" available: .* \(a plugin's metric needs its file in --plugins\)"):
        load_registry(entry_points=False).select(["sharpnes", "zzz"])
    with pytest.raises(QualmetError, match="does not exist"):
        load_registry([tmp_path / "missing.py"], entry_points=False)
    bad = tmp_path / "bad.py"
    bad.write_text("import does_not_exist_module\n")
    with pytest.raises(QualmetError, match="bad.py.*failed to import"):
        load_registry([bad], entry_points=False)


@pytest.mark.parametrize("doc", ["README.md", "docs/metrics.md"])
def test_documented_plugin_example_runs_and_measures_what_it_says(tmp_path, doc):
    """The red_share example of the docs, run as a plugin file: a red box scores 1, a white one 0."""
    import json
    import re

    import cv2
    import numpy as np

    text = (Path(__file__).resolve().parents[1] / doc).read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "red_share" in b)
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(code)
    img = np.full((64, 96, 3), 40, np.uint8)
    img[8:40, 8:40] = (220, 30, 30)  # red (RGB)
    img[8:40, 50:90] = (255, 255, 255)  # white: R is not above G + 40 (it would be with uint8 wrap-around)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"images": [{"id": 1, "file_name": "f.png", "width": 96, "height": 64}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 32, 32]},
                                                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 8, 40, 32]}],
                                "categories": [{"id": 1, "name": "thing"}]}))
    run = run_metrics(data, metrics=["red_share"], plugins=[plugin], workers=1, progress=False)
    assert run.objects.sort_values("annotation_id")["red_share"].tolist() == [1.0, 0.0]


def test_documented_frame_and_vectorised_examples_run_and_measure_what_they_say(tmp_path):
    """docs/metrics.md's saturation (frame) and box_share (vectorised) examples, run as a plugin file."""
    import json
    import re

    import cv2
    import numpy as np

    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "box_share" in b)
    plugin = tmp_path / "examples.py"
    plugin.write_text("import qualmet\n" + code)
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = (255, 0, 0)  # half pure red (saturation 1), half black (saturation 0)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"images": [{"id": 1, "file_name": "f.png", "width": 100, "height": 50}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 25]}],
                                "categories": [{"id": 1, "name": "thing"}]}))
    run = run_metrics(data, metrics=["saturation", "box_share"], plugins=[plugin], workers=1, progress=False)
    assert run.errors == []
    assert run.frames["saturation"].item() == pytest.approx(0.5)
    assert run.objects["box_share"].item() == pytest.approx(0.25)


def test_an_entry_point_naming_a_package_finds_metrics_in_its_submodules(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "qm_pkg").mkdir(parents=True)
    (site / "qm_pkg" / "__init__.py").write_text("from . import widths  # noqa\nimport numpy as np\n")
    (site / "qm_pkg" / "widths.py").write_text(textwrap.dedent(EP_MODULE.format(name="ep_sub_width")))
    info = site / "qm_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qm_pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[qualmet.metrics]\nsub = qm_pkg\n")
    monkeypatch.syspath_prepend(str(site))
    reg = load_registry()
    spec = reg["ep_sub_width"]
    assert "qm_pkg" in spec.source
    # its source hash is its package folder's, so editing widths.py recomputes it
    from qualmet.discovery import folder_hash

    assert spec.source_hash == folder_hash(site / "qm_pkg")
    (site / "qm_pkg" / "widths.py").write_text((site / "qm_pkg" / "widths.py").read_text() + "# edited\n")
    assert folder_hash(site / "qm_pkg") != spec.source_hash
