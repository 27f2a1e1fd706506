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
    probe = ("import qualmet, importlib.resources as r; from qualmet.discovery import load_registry; "
             "reg = load_registry(); print(qualmet.__file__); print(','.join(sorted(reg.metrics))); "
             "print(len(r.files('qualmet.report').joinpath('static/report.js').read_text())); "
             "from qualmet.demo import SPEC; from qualmet.experiment import load_spec; "
             "print(SPEC if load_spec(SPEC).name == 'pandas_filtering' else 'no-spec')")
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"}
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where, names, js, spec = out.stdout.split()
    assert Path(where).is_relative_to(site)
    assert Path(spec).is_relative_to(site)  # `qualmet demo` finds its spec in the installed package
    assert {"box_tightness", "black_white_ratio", "aspect_ratio", "max_iou_other", "confidence"} <= set(names.split(","))
    assert int(js) > 1000


def test_every_dependency_is_pinned_in_constraints_and_make_installs_with_them():
    """A fresh .venv must compute the same numbers as the one that made the committed results:
    every package pyproject names (all extras) has an exact pin, and each pip install in the
    Makefile applies the constraints."""
    import re
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    wanted = {canonicalize_name(Requirement(r).name) for r in reqs}
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    assert wanted - set(pins) == set(), "unpinned dependencies"
    for r in reqs:  # the pins satisfy pyproject's own ranges
        req = Requirement(r)
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), r
    makefile = (REPO / "Makefile").read_text()
    installs = [ln for ln in makefile.splitlines() if "$(BIN)/pip install" in ln]  # `make lock` resolves afresh
    assert installs and all("-c constraints.txt" in ln for ln in installs), installs
    for name, version in re.findall(r"\b(torch|torchvision)==([\w.+]+)", makefile):  # pinned twice: must agree
        assert pins[name] == version, (name, version, pins[name])
