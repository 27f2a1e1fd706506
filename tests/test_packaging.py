"""A plain, non-editable install (the wheel pip would build) finds the built-in metrics and the report's
static files, and ships no top-level ``metrics`` package that could collide with someone else's."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_builtins_without_a_top_level_metrics_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path / "w")],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "w").glob("qualmet-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0] for n in z.namelist()}
        z.extractall(site)
    assert tops == {"qualmet", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    # -S: no site hooks, so the editable install of this checkout is invisible; only the wheel's copy is.
    probe = ("import qualmet, importlib.resources as r; from qualmet.registry import load_registry; "
             "reg = load_registry(); print(qualmet.__file__); print(','.join(sorted(reg.metrics))); "
             "print(len(r.files('qualmet.report').joinpath('static/report.js').read_text()))")
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"}
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where, names, js = out.stdout.split()
    assert Path(where).is_relative_to(site)
    assert {"box_tightness", "black_white_ratio", "aspect_ratio", "max_iou_other", "confidence"} <= set(names.split(","))
    assert int(js) > 1000
