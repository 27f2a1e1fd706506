"""The layering a new maintainer relies on, read from the source: the report renders folders (it
imports no detector, runner or plugin machinery), selection reads a MetricRun (no compute or
registry), a metrics run is plain data."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qualmet

PKG = Path(qualmet.__file__).parent


def qualmet_imports(path: Path) -> set[str]:
    """Every qualmet module ``path`` imports, at any depth of the file (function-level imports too)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "qualmet"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "qualmet":
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import detector`
    return out


def uses(imports: set[str], module: str) -> bool:
    return any(i == module or i.startswith(module + ".") for i in imports)


@pytest.mark.parametrize("path", sorted((PKG / "report").glob("*.py")), ids=lambda p: p.name)
def test_the_report_renders_folders_and_runs_nothing(path):
    imports = qualmet_imports(path)
    for banned in ("qualmet.detector", "qualmet.runner", "qualmet.discovery", "qualmet.plugin", "qualmet.context",
                   "qualmet.compute", "qualmet.experiment"):
        assert not uses(imports, banned), f"report/{path.name} imports {banned}"


def test_selection_and_metric_runs_need_no_plugin_machinery():
    for name in ("select.py", "metric_run.py", "label_errors.py", "steps.py"):
        imports = qualmet_imports(PKG / name)
        for banned in ("qualmet.compute", "qualmet.discovery", "qualmet.plugin", "qualmet.runner", "qualmet.metric_tables",
                       "qualmet.detector"):
            assert not uses(imports, banned), f"{name} imports {banned}"


def test_the_import_check_sees_relative_and_function_level_imports(tmp_path):
    """The checker itself: a function-level ``from ..detector import x`` in report/ is found."""
    probe = PKG / "report" / "__init__.py"
    found = qualmet_imports(probe)
    assert "qualmet.report.output" in found  # `from .output import Output` at the top
    assert "qualmet.report.sections" in found  # imported inside a function


def test_every_picture_is_drawn_in_plots():
    """One home per plot: no module but plots.py imports matplotlib."""
    drawers = [p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
               if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "matplotlib" in (
                   getattr(n, "module", None) or " ".join(a.name for a in n.names))
                      for n in ast.walk(ast.parse(p.read_text())))]
    assert drawers == ["plots.py"], drawers


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: p.relative_to(PKG).as_posix())
def test_modules_and_functions_stay_small(path):
    """Small modules with one job, functions that fit a screen."""
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {long}"
