"""Where metrics come from: the built-ins (``qualmet.builtin_metrics``), installed packages (entry
point group ``qualmet.metrics``) and user files or folders (``--plugins``), gathered into a
:class:`Registry`. A name defined twice is an error naming both sources. Plugins are referred to by
source strings, not function objects, so worker processes can load the same registry themselves.

A plugin folder is imported as a package of its own (as pytest's importlib mode does): its files
import their helpers relatively (``from ._shared import FACTOR``), so two folders' helpers of one
name never meet, and nothing is added to ``sys.path``. A metric's cache identity is its name, its
version and the hash of its folder's ``.py`` files (:func:`folder_hash`): editing a plugin or any
helper beside it recomputes that folder's metrics, and nothing else does.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from .errors import QualmetError
from .plugin import _DEFINED, MetricSpec

ENTRY_POINT_GROUP = "qualmet.metrics"
BUILTIN_PACKAGE = "qualmet.builtin_metrics"
_PACKAGE_PREFIX = "qualmet_plugins_"


@dataclass
class Registry:
    """Metric name -> spec, plus the plugin sources that produced it (for workers to reload)."""

    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    plugin_sources: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)  # installed plugins that could not be loaded

    def add(self, spec: MetricSpec) -> None:
        old = self.metrics.get(spec.name)
        if old is not None and old.func is not spec.func:
            raise QualmetError(f"metric name clash: {spec.name!r} is defined by {old.source} and by {spec.source}; "
                               "rename one (name=...), or leave one source out")
        self.metrics[spec.name] = spec

    def select(self, names: Iterable[str] | None) -> list[MetricSpec]:
        """Specs for these names (all, sorted, when None); an unknown name is an error listing the known ones."""
        if names is None:
            return [self.metrics[n] for n in sorted(self.metrics)]
        names = [names] if isinstance(names, str) else names
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        if not names:
            raise QualmetError("no metric named (an empty list); leave the selection out to run every metric")
        unknown = [n for n in names if n not in self.metrics]
        if unknown:
            broken = f" ({'; '.join(self.problems)})" if self.problems else ""
            raise QualmetError(f"unknown metric(s) {self.hint(unknown)}; available: {', '.join(sorted(self.metrics))}"
                               f"{broken} (a plugin's metric needs its file in --plugins)")
        return [self.metrics[n] for n in names]

    def hint(self, unknown: Iterable[str]) -> str:
        """Unknown metric names, each with the closest known name: "'box_tightnes' (did you mean
        'box_tightness'?)"."""
        import difflib

        return ", ".join(f"{n!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(n, self.metrics, 1))
                         else repr(n) for n in unknown)

    def __contains__(self, name: str) -> bool:
        return name in self.metrics

    def __getitem__(self, name: str) -> MetricSpec:
        return self.metrics[name]


def _package_files(folder: Path) -> list[Path]:
    """The ``.py`` files of ``folder`` and of the packages (folders with ``__init__.py``) below it."""
    files = sorted(folder.glob("*.py"))
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and (d / "__init__.py").is_file()):
        files += _package_files(sub)
    return files


def folder_hash(folder: Path) -> str:
    """sha256 (16 hex digits) of every ``.py`` file of a plugin folder and its subpackages, each with
    its path relative to the folder: the ``source_hash`` of every metric defined there."""
    h = hashlib.sha256()
    try:
        for f in _package_files(folder):
            h.update(f"{f.relative_to(folder)}\0".encode() + f.read_bytes() + b"\0")
    except OSError as exc:
        raise QualmetError(f"plugin folder {folder}: cannot read its files: {exc}") from None
    return h.hexdigest()[:16]


def _installed_hash(module: Any) -> str:
    """An installed plugin's ``source_hash``: its top-level package's folder, or its own file."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    if getattr(top, "__path__", None):
        return folder_hash(Path(list(top.__path__)[0]))
    f = getattr(top, "__file__", None)
    return hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16] if f else ""


def _specs_in_module(module: Any, source: str, source_hash: str) -> list[MetricSpec]:
    """Metrics defined (not merely imported from elsewhere) in ``module`` or, for a package, in one of
    its submodules, tagged with their source and its hash. Every decorated function counts, whether or
    not a module-level name still refers to it."""
    prefix = module.__name__ + "."
    out = [replace(spec, source=source, source_hash=source_hash)
           for home in sorted(h for h in _DEFINED if h == module.__name__ or h.startswith(prefix))
           for _, spec in _DEFINED[home].values()]
    return sorted(out, key=lambda s: s.name)


def _folder_package(folder: Path, fresh: bool) -> str:
    """The name of the package standing for plugin folder ``folder`` in ``sys.modules``. ``fresh``
    drops the modules imported from it before, so edited files (plugins and helpers) are read again."""
    name = _PACKAGE_PREFIX + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    if fresh:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
            _DEFINED.pop(mod, None)
    if name not in sys.modules:
        spec = importlib.util.spec_from_loader(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def _import_file(path: Path, fresh: bool = True) -> Any:
    """Import plugin file ``path`` as a module of its folder's package (see :func:`_folder_package`)."""
    name = f"{_folder_package(path.parent, fresh)}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise QualmetError(f"{path}: cannot load as a Python plugin file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _DEFINED.pop(name, None)  # an earlier import's metrics are replaced by this one's
    try:
        spec.loader.exec_module(module)
    except QualmetError as exc:
        sys.modules.pop(name, None)
        raise QualmetError(f"{path}: {exc}") from None
    except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end qualmet silently
        sys.modules.pop(name, None)
        raise QualmetError(f"{path}: plugin failed to import: {type(exc).__name__}: {exc}{_helper_hint(exc, path)}") from None
    _refuse_absolute_helpers(path)
    return module


def _refuse_absolute_helpers(path: Path) -> None:
    """A helper beside the plugin imported by its bare name (through a ``sys.path`` entry the plugin
    added) is a top-level module that would outlive an edit of its file: its metrics would compute
    with the old code under the new cache key. Refuse it, saying how to import it instead."""
    folder = path.parent
    for f in [*folder.glob("*.py"), *folder.glob("*/__init__.py")]:
        name = f.parent.name if f.name == "__init__.py" else f.stem
        mod = sys.modules.get(name)
        where = getattr(mod, "__file__", None) if mod is not None else None
        if where and Path(where).resolve() == f.resolve() and f.resolve() != path.resolve():
            del sys.modules[name]
            raise QualmetError(f"{path}: imports its helper {name} by its bare name; import it relatively "
                               f"(`from .{name} import ...`) so an edit of {f.name} is picked up")


def _helper_hint(exc: BaseException, path: Path) -> str:
    """For ``import helper`` of a file beside the plugin: say to import it relatively."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    top = (missing or "").split(".")[0]
    if top and ((path.parent / f"{top}.py").is_file() or (path.parent / top / "__init__.py").is_file()):
        return f" ({top} lies beside the plugin: import it relatively, e.g. `from .{missing} import ...`)"
    return ""


def plugin_files(source: str | Path) -> list[Path]:
    """The .py files of a plugin source: the file itself, or a folder's ``*.py`` (not ``_*``), sorted."""
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.py") if not f.name.startswith("_"))
        if not files:
            raise QualmetError(f"plugin folder {p} has no .py files (names starting with _ are helpers, not plugins)")
        return files
    if p.is_file():
        return [p]
    raise QualmetError(f"plugin path {p} does not exist (give a .py file or a folder of them)")


def load_builtins(reg: Registry) -> None:
    """Import every module of ``qualmet.builtin_metrics`` and register its metrics."""
    pkg = importlib.import_module(BUILTIN_PACKAGE)
    digest = folder_hash(Path(pkg.__path__[0]))
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")
        for spec in _specs_in_module(mod, f"builtin ({BUILTIN_PACKAGE}.{info.name})", digest):
            reg.add(spec)


def load_entry_points(reg: Registry) -> None:
    """Register metrics from installed packages: each entry point names a module (or an object in one)."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        src = f"entry point {ep.name!r} ({ep.value}{', ' + ep.dist.name if ep.dist else ''})"
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:  # one broken installed package does not stop the others
            reg.problems.append(f"{src}: failed to load, its metrics are not available: {type(exc).__name__}: {exc}")
            continue
        module = obj if inspect.ismodule(obj) else sys.modules.get(getattr(obj, "__module__", ""), None)
        if module is None:
            reg.problems.append(f"{src}: does not name a module or a metric function; skipped")
            continue
        modules = [module]
        if inspect.ismodule(obj) and hasattr(obj, "__path__"):  # a package: also the submodules it imported
            modules += [m for n, m in sorted(sys.modules.items()) if n.startswith(obj.__name__ + ".") and m is not None]
        digest = _installed_hash(module)
        specs = {id(s.func): s for m in modules for s in _specs_in_module(m, src, digest)}.values()
        if not inspect.ismodule(obj):
            specs = [s for s in specs if s.func is obj]
        for spec in sorted(specs, key=lambda s: s.name):
            reg.add(spec)


def load_plugin_source(reg: Registry, source: str | Path, loaded: set[Path] | None = None) -> None:
    """Register the metrics of a user plugin file or folder. Files already in ``loaded`` (the same
    file reached through a folder and by name, say) are skipped, not reported as clashing with
    themselves; the first file of a folder imports that folder's package afresh."""
    loaded = set() if loaded is None else loaded
    found = 0
    for f in plugin_files(source):
        r = Path(f).resolve()
        if r in loaded:  # loaded already (through its folder, say): what it registered then counts
            found += sum(1 for spec in reg.metrics.values() if spec.source == str(r))
            continue
        fresh = r.parent not in loaded
        loaded.update((r, r.parent))
        specs = _specs_in_module(_import_file(r, fresh), str(r), folder_hash(r.parent))
        found += len(specs)
        for spec in specs:
            reg.add(spec)
    if not found:
        raise QualmetError(f"{source}: defines no metric (decorate a function with @qualmet.metric; "
                           "in a folder, files whose names start with _ are helpers)")


_CACHE: dict[tuple[str, ...], Registry] = {}


def load_registry(plugins: Iterable[str | Path] = (), entry_points: bool = True, cached: bool = False) -> Registry:
    """Built-ins, then installed entry points, then each ``plugins`` path; clashes are errors.

    ``cached=True`` reuses a registry already loaded in this process for the same sources (workers).
    """
    plugins = [plugins] if isinstance(plugins, (str, Path)) else plugins
    sources = tuple(dict.fromkeys(str(Path(p).resolve()) for p in plugins))
    key = sources + (("<ep>",) if entry_points else ())
    if cached and key in _CACHE:
        return _CACHE[key]
    reg = Registry(plugin_sources=sources)
    load_builtins(reg)
    if entry_points:
        load_entry_points(reg)
    loaded: set[Path] = set()
    for src in sources:
        load_plugin_source(reg, src, loaded)
    _CACHE[key] = reg
    return reg


def list_metrics(plugins: Iterable[str | Path] = ()) -> list[MetricSpec]:
    """Every discoverable metric (built-ins, entry points, ``plugins``), sorted by name."""
    return load_registry(plugins).select(None)
