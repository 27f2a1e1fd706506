"""Metric plugins: the ``@qualmet.metric`` decorator, the per-frame context, and discovery.

A metric is a function plus metadata (level, needs, which end is ``worse``, version). Metrics come
from three places: the built-ins in ``qualmet.builtin_metrics``, user files or folders
(``--plugins``), and installed packages through the entry-point group ``qualmet.metrics``. A name
defined twice is an error naming both sources. Plugins are referred to by *source strings* (not
function objects), so worker processes can load the same registry themselves.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import pkgutil
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .errors import QualmetError

LEVELS = ("object", "frame")
WORSE = ("low", "high")
NEEDS = frozenset({"pixels", "predictions"})
ENTRY_POINT_GROUP = "qualmet.metrics"
BUILTIN_PACKAGE = "qualmet.builtin_metrics"
_SPEC_ATTR = "__qualmet_metric__"
SMALL_SIDE = 320  # longest side of MetricContext.small
# columns of objects.parquet / frames.parquet that a metric column must not replace
RESERVED_NAMES = frozenset({"annotation_id", "image_id", "category_id", "x", "y", "w", "h", "file_name", "width", "height"})
# every decorated function, by the module it was defined in (registration does not depend on the
# module's globals: a metric defined in a function body, or two functions sharing a Python name, count)
_DEFINED: dict[str, dict[tuple[str, str], tuple[Callable[..., Any], "MetricSpec"]]] = {}
_PLUGIN_FOLDERS: set[Path] = set()  # folders plugin files were loaded from (their helpers live there)


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric: the function, what it needs, and which end of its scale is suspicious."""

    name: str
    func: Callable[..., Any]
    level: str
    needs: frozenset[str]
    worse: str
    description: str
    version: str
    vectorised: bool = False
    finalize: Callable[..., Any] | None = None
    source: str = ""  # where it came from: "builtin", a file path, or "entry-point NAME (module)"
    source_hash: str = ""  # hash of the defining file and its local helper modules (module_digest): edits recompute

    @property
    def needs_pixels(self) -> bool:
        return "pixels" in self.needs

    @property
    def needs_predictions(self) -> bool:
        return "predictions" in self.needs

    @property
    def key(self) -> str:
        """Identity for caching: name, version and source text."""
        return hashlib.sha256(f"{self.name}\0{self.version}\0{self.source_hash}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "needs": sorted(self.needs), "worse": self.worse,
                "version": self.version, "vectorised": self.vectorised, "description": self.description,
                "source": self.source}


def metric(name: str, level: str | None = None, needs: Iterable[str] = (), worse: str = "low", description: str = "",
           version: str = "1", vectorised: bool = False, finalize: Callable[..., Any] | None = None
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a metric plugin.

    ``worse`` ("low", the default, or "high") is the suspicious end of the scale, read by every
    filter and ranking: set it to "high" for a metric whose large values are the bad ones.

    Per-frame form (default): ``func(ctx: MetricContext)`` returns one float per object of the frame
    (``level="object"``, in ``ctx.annotations`` order) or one float (``level="frame"``); NaN means
    "not defined here". Vectorised form (``vectorised=True``, no pixels): ``func(annotations, images)``
    (plus ``predictions`` when needed) returns a Series aligned to ``annotations`` (object level) or
    indexed by image id (frame level). ``finalize(partials, annotations)`` turns per-object vectors
    computed per frame into the final values once all frames are done (a data-set-wide pass).
    """
    if callable(name):  # @qualmet.metric on a function, without the call
        raise QualmetError(f"@qualmet.metric needs its arguments: write @qualmet.metric(name=..., level=..., "
                           f"worse=...) above {getattr(name, '__name__', 'the function')}")
    if not isinstance(name, str) or not name.isidentifier():
        raise QualmetError(f"metric name {name!r} must be a Python identifier (letters, digits, _)")
    if name in RESERVED_NAMES or name.startswith("__"):
        raise QualmetError(f"metric name {name!r} is taken by a column of the output tables "
                           f"({', '.join(sorted(RESERVED_NAMES))}) or starts with '__'; choose another")
    if needs is None or not isinstance(needs, (str, set, frozenset, list, tuple)):
        raise QualmetError(f"metric {name!r}: needs must be a set of {sorted(NEEDS)} (or empty), got {needs!r}")
    if not isinstance(description, str):
        raise QualmetError(f"metric {name!r}: description must be text, got {description!r}")
    if finalize is not None and not callable(finalize):
        raise QualmetError(f"metric {name!r}: finalize must be a function, got {finalize!r}")
    if level not in LEVELS:
        raise QualmetError(f"metric {name!r}: level must be one of {LEVELS}, got {level!r}")
    if worse not in WORSE:
        raise QualmetError(f"metric {name!r}: worse must be 'low' or 'high', got {worse!r}")
    needs_set = frozenset([needs] if isinstance(needs, str) else needs)
    if not needs_set <= NEEDS:
        raise QualmetError(f"metric {name!r}: unknown needs {sorted(needs_set - NEEDS)}; allowed: {sorted(NEEDS)}")
    if vectorised and "pixels" in needs_set:
        raise QualmetError(f"metric {name!r}: a vectorised metric cannot need pixels (pixels are per frame)")
    if finalize is not None and (vectorised or level != "object"):
        raise QualmetError(f"metric {name!r}: finalize is for per-frame object metrics only")

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = MetricSpec(name=name, func=func, level=level, needs=needs_set, worse=worse,
                          description=" ".join(description.split()) or _first_line(func.__doc__),
                          version=str(version), vectorised=bool(vectorised), finalize=finalize)
        setattr(func, _SPEC_ATTR, spec)
        # keyed by where and what it defines: a module executed again (importlib.reload, %autoreload)
        # replaces its metrics instead of adding a clashing second copy
        _DEFINED.setdefault(getattr(func, "__module__", None) or "", {})[
            (getattr(func, "__qualname__", ""), name)] = (func, spec)
        return func

    return deco


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


_GRID_MAPS: dict[tuple[int, int, int], np.ndarray] = {}


def _subsample(image: np.ndarray, s: int) -> np.ndarray:
    """``image[::s, ::s]`` as a contiguous array. cv2.remap with integer nearest-neighbour maps picks
    exactly those pixels, several times faster than numpy's strided copy of 3-byte pixels."""
    h, w = image.shape[:2]
    if image.ndim != 3 or max(h, w) > 32000:  # int16 maps; anything else takes the plain path
        return np.ascontiguousarray(image[::s, ::s])
    key = (h, w, s)
    m = _GRID_MAPS.get(key)
    if m is None:
        oh, ow = -(-h // s), -(-w // s)
        m = np.empty((oh, ow, 2), np.int16)
        m[..., 0] = np.arange(ow, dtype=np.int16) * s
        m[..., 1] = (np.arange(oh, dtype=np.int16) * s)[:, None]
        if len(_GRID_MAPS) > 64:  # a data set of many sizes: keep the memory bounded
            _GRID_MAPS.clear()
        _GRID_MAPS[key] = m
    import cv2

    return cv2.remap(image, m, None, cv2.INTER_NEAREST)


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` marked read-only: what the context shares between metrics cannot be changed by one of them."""
    a.flags.writeable = False
    return a


def private_copy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` that a plugin may change in place without touching ``df``: shallow (cheap)
    under copy-on-write (always on from pandas 3), deep where it is off (pandas 2's default)."""
    major = int(pd.__version__.split(".")[0])
    return df.copy(deep=not (major >= 3 or pd.get_option("mode.copy_on_write") is True))


class _pixel_cache:
    """Like ``functools.cached_property``, for what is computed from the image: computed at most once per
    frame and shared, but every access first checks that the running metric declared ``pixels``."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, ctx: "MetricContext | None", owner: type | None = None) -> Any:
        if ctx is None:
            return self
        ctx._check("pixels")
        v = ctx._shared.get(self.name)
        if v is None:
            v = ctx._shared[self.name] = self.fn(ctx)
        return v


class MetricContext:
    """What a per-frame metric sees: the decoded image (when it needs pixels), the frame's
    annotations and predictions, and shared intermediates computed at most once per frame.

    One context serves every metric of a frame. The runner calls :meth:`begin` before each metric, so
    a metric reads only the image and predictions it declares in ``needs`` (a context made directly,
    as in tests, allows everything). Arrays are read-only and tables copies: no metric can change
    what another sees."""

    def __init__(self, image_id: int, file_name: str, width: int, height: int, annotations: "pd.DataFrame | tuple",
                 predictions: pd.DataFrame | None = None, image: np.ndarray | None = None,
                 boxes: np.ndarray | None = None):
        self.image_id = int(image_id)
        self.file_name = file_name
        self._shared: dict[str, Any] = {}  # intermediates computed from the image
        self._needs: frozenset[str] | None = None  # the running metric's; None: everything allowed
        self._views: dict[str, pd.DataFrame] = {}  # the running metric's copies of the tables
        if isinstance(annotations, tuple):  # (table, start, stop): the runner's lazy row range
            table, a0, a1 = annotations
            self._ann_rows = (table, int(a0), int(a1))
            self._annotations: pd.DataFrame | None = None
            self._n_objects = int(a1) - int(a0)
        else:
            self._annotations = annotations
            self._n_objects = len(annotations)
        self._predictions = predictions
        if image is not None and image.flags.writeable:  # shared by every metric of the frame: read-only
            image = _read_only(image.view())
        self._image = image
        if boxes is not None:  # the runner passes them precomputed (cheaper than from the DataFrame)
            self.__dict__["boxes"] = _read_only(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        if image is not None:  # the decoded size is the truth for pixel work
            height, width = image.shape[:2]
        self.width, self.height = int(width), int(height)

    def begin(self, needs: frozenset[str]) -> None:
        """A new metric runs on this frame: it may read what ``needs`` declares, with fresh table copies."""
        self._needs = needs
        if self._views:
            self._views = {}

    def _check(self, need: str) -> None:
        if self._needs is not None and need not in self._needs:
            what = "uses pixels" if need == "pixels" else "reads ctx.predictions"
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric {what} but does not declare "
                               f"needs={{'{need}'}}")

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) RGB uint8, read-only (every metric of the frame shares it)."""
        self._check("pixels")
        if self._image is None:
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric uses pixels but does not declare needs={{'pixels'}}")
        return self._image

    @property
    def predictions(self) -> pd.DataFrame:
        """The frame's predictions (annotation columns plus ``score``); the running metric's own copy."""
        self._check("predictions")
        if self._predictions is None:
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric reads ctx.predictions but does not "
                               "declare needs={'predictions'} (or the run has no --predictions)")
        v = self._views.get("predictions")
        if v is None:
            v = self._views["predictions"] = private_copy(self._predictions)
        return v

    @property
    def image_size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def annotations(self) -> pd.DataFrame:
        """The frame's annotation rows; the running metric's own copy (cheap: copy-on-write), so a metric
        that changes it changes nothing another metric sees."""
        v = self._views.get("annotations")
        if v is None:
            if self._annotations is None:  # the runner's lazy row range of the chunk's table
                table, a0, a1 = self._ann_rows
                self._annotations = table.iloc[a0:a1]
            v = self._views["annotations"] = private_copy(self._annotations)
        return v

    @property
    def n_objects(self) -> int:
        return self._n_objects

    @cached_property
    def boxes(self) -> np.ndarray:
        """(N, 4) float xywh boxes of the frame's annotations."""
        a = self.annotations
        if len(a) == 0:
            return _read_only(np.zeros((0, 4)))
        return _read_only(np.stack([a[c].to_numpy(dtype=np.float64) for c in ("x", "y", "w", "h")], axis=1))

    @cached_property
    def boxes_int(self) -> np.ndarray:
        """(N, 4) int xyxy boxes clipped to the image (rounded outward); empty boxes have x1==x2
        (y1==y2): a box of zero width or height covers no pixel, wherever it lies."""
        b = self.boxes
        out = np.empty((len(b), 4))  # a few whole-array operations: this runs for every frame
        np.floor(b[:, :2], out=out[:, :2])
        np.ceil(b[:, :2] + b[:, 2:], out=out[:, 2:])
        lim = np.array([self.width, self.height, self.width, self.height], np.float64)
        np.minimum(np.maximum(out, 0.0, out=out), lim, out=out)
        np.maximum(out[:, 2:], out[:, :2], out=out[:, 2:])
        flat = b[:, 2:] <= 0
        if flat.any():
            out[:, 2:][flat] = out[:, :2][flat]
        return _read_only(out.astype(int))

    @_pixel_cache
    def gray(self) -> np.ndarray:
        """(H, W) uint8 luma (OpenCV's RGB->GRAY)."""
        import cv2

        return _read_only(cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY))

    @_pixel_cache
    def hsv(self) -> np.ndarray:
        """(H, W, 3) uint8 HSV (OpenCV ranges: H 0-179, S and V 0-255)."""
        import cv2

        return _read_only(cv2.cvtColor(self.image, cv2.COLOR_RGB2HSV))

    @cached_property
    def small_stride(self) -> int:
        """Sampling step of :attr:`small`: the smallest integer keeping its longest side <= SMALL_SIDE."""
        return max(1, -(-max(self.width, self.height) // SMALL_SIDE))

    @cached_property
    def small_shape(self) -> tuple[int, int]:
        """(rows, columns) of :attr:`small`, known without building it."""
        s = self.small_stride
        return -(-self.height // s), -(-self.width // s)

    @_pixel_cache
    def small(self) -> np.ndarray:
        """The RGB image sampled on a regular grid (every ``small_stride``-th pixel, no averaging).

        Pixel shares and colour histograms estimated on it are unbiased and several times cheaper;
        averaging (INTER_AREA) would instead mix black and white into grey."""
        s = self.small_stride
        if s == 1:
            return self.image
        return _read_only(_subsample(self.image, s))

    @_pixel_cache
    def small_gray(self) -> np.ndarray:
        """Luma of :attr:`small`: ``gray[::s, ::s]`` (sampled from :attr:`gray`, which frame metrics
        usually need anyway, rather than building :attr:`small`)."""
        s = self.small_stride
        return self.gray if s == 1 else _read_only(self.grid(0, 0, self.width, self.height, s, self.gray))

    @_pixel_cache
    def small_hsv(self) -> np.ndarray:
        """HSV of :attr:`small`."""
        import cv2

        return _read_only(cv2.cvtColor(self.small, cv2.COLOR_RGB2HSV))

    @cached_property
    def small_boxes_int(self) -> np.ndarray:
        """:attr:`boxes_int` in :attr:`small` coordinates (x1, y1 rounded up, x2, y2 rounded up)."""
        s = self.small_stride
        b = -(-self.boxes_int // s)
        h, w = self.small_shape
        return _read_only(np.minimum(b, np.array([w, h, w, h]), out=b))  # boxes_int is already >= 0

    def crop(self, i: int, array: np.ndarray | None = None, max_side: int | None = None) -> np.ndarray:
        """The pixels of box ``i`` (clipped) from ``array`` (default: the RGB image); may be empty.

        With ``max_side``, every k-th pixel is taken so the crop's longest side is at most that."""
        x1, y1, x2, y2 = self.boxes_int[i]
        a = (self.image if array is None else array)
        if max_side:
            k = max(1, -(-max(x2 - x1, y2 - y1) // max_side))
            if k > 1:
                return self.grid(x1, y1, x2, y2, k, a)
        return a[y1:y2, x1:x2]

    def grid(self, x1: int, y1: int, x2: int, y2: int, k: int, array: np.ndarray | None = None) -> np.ndarray:
        """``array[y1:y2:k, x1:x2:k]`` (default: the RGB image) as a contiguous array: every k-th
        pixel of a region. Colour pixels are copied as 3-byte units, twice as fast as numpy's copy
        of the strided view."""
        a = self.image if array is None else array
        x1, y1 = max(0, x1), max(0, y1)  # a negative start would count from the far end
        if k == 1 or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or not a.flags.c_contiguous:
            return np.ascontiguousarray(a[y1:y2:k, x1:x2:k])
        h, w = a.shape[:2]
        c = np.ascontiguousarray(a.reshape(h, w * 3).view("V3")[y1:y2:k, x1:x2:k])
        return c.view(np.uint8).reshape(c.shape[0], c.shape[1], 3)

    def nan_per_object(self) -> np.ndarray:
        return np.full(self.n_objects, math.nan)


# -- discovery --------------------------------------------------------------------------------

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


def _file_hash(path: str | Path | None) -> str:
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _module_files(name: str, base: Path) -> list[Path]:
    """The files below ``base`` that importing the dotted ``name`` from there runs: each package's
    ``__init__.py`` on the way (none for a namespace folder) and the module's own file."""
    out, d = [], base
    parts = name.split(".")
    for i, part in enumerate(parts):
        if (d / part / "__init__.py").is_file():
            out.append(d / part / "__init__.py")
        elif i == len(parts) - 1 and (d / f"{part}.py").is_file():
            out.append(d / f"{part}.py")
        elif not (d / part).is_dir():
            break
        d = d / part
    return out


def _imported_files(file: Path, root: Path) -> list[Path]:
    """The files of the modules that ``file``'s import statements name (absolute ones looked up in
    ``root``, the folder on ``sys.path`` while its plugin loads; relative ones from ``file``'s package),
    found on disk rather than in ``sys.modules``, which may hold another folder's module of that name."""
    import ast

    try:
        tree = ast.parse(file.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    out: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out += _module_files(a.name, root)
        elif isinstance(node, ast.ImportFrom):
            base = root
            if node.level:
                base = file.parent
                for _ in range(node.level - 1):
                    base = base.parent
            mod = node.module or ""
            if mod:
                out += _module_files(mod, base)
            for a in node.names:  # `from pkg import submodule`
                out += _module_files(f"{mod}.{a.name}" if mod else a.name, base)
    return out


def _is_helper(f: Path, root: Path) -> bool:
    return f.suffix == ".py" and f.is_relative_to(root) and not {"site-packages", "dist-packages"} & set(f.parts)


def _helpers(module: Any) -> list[Path]:
    """A plugin module's helpers: the .py files in its folder or below that it imports (``import
    helper``, ``from helper import f, CONSTANT``, ``from pkg.sub import g``), that those import in turn
    (relative imports inside a helper package included), and those of objects it holds. Installed
    packages are not helpers."""
    own = Path(module.__file__).resolve()
    root = own.parent

    def home(v: Any) -> Any:
        try:
            return v if inspect.ismodule(v) else sys.modules.get(getattr(v, "__module__", None) or "")
        except Exception:  # an object whose attribute lookup itself fails: not a helper we can name
            return None

    held = [getattr(home(v), "__file__", None) for v in list(vars(module).values())]
    todo = [Path(f) for f in held if f] + _imported_files(own, root)
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        try:
            f = f.resolve()
        except (OSError, RuntimeError):
            continue
        if f in seen or f == own or not _is_helper(f, root):
            continue
        seen.add(f)
        todo += _imported_files(f, root)
    return sorted(seen)


def module_digest(module: Any) -> str:
    """A metric's ``source_hash``: its file's hash, combined with those of the local helper modules
    it imports, directly or through other helpers (:func:`_helpers`), so that editing a helper
    recomputes its metrics too."""
    own = getattr(module, "__file__", None)
    digest = _file_hash(own)
    helpers = _helpers(module) if own else []
    if not helpers:
        return digest
    h = hashlib.sha256(digest.encode())
    base = Path(own).resolve().parent
    for f in helpers:
        h.update(f"\0{f.relative_to(base)}\0{_file_hash(f)}".encode())
    return h.hexdigest()[:16]


def _specs_in_module(module: Any, source: str) -> list[MetricSpec]:
    """Metrics defined (not merely imported from elsewhere) in ``module`` or, for a package, in one of
    its submodules, tagged with their source and their defining module's digest. Every decorated
    function counts, whether or not a module-level name still refers to it."""
    from dataclasses import replace

    out = []
    prefix = module.__name__ + "."
    for home in sorted(h for h in _DEFINED if h == module.__name__ or h.startswith(prefix)):
        digest = module_digest(sys.modules.get(home, module))
        out += [replace(spec, source=source, source_hash=digest) for _, spec in _DEFINED[home].values()]
    return sorted(out, key=lambda s: s.name)


def _import_file(path: Path) -> Any:
    """Import a plugin file under a private module name derived from its absolute path."""
    path = path.resolve()
    mod_name = "qualmet_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise QualmetError(f"{path}: cannot load as a Python plugin file")
    earlier = sys.modules.get(mod_name)
    if earlier is not None:  # loaded before, maybe from an older version: its helpers are imported afresh too
        stale = {str(f) for f in _helpers(earlier)}
        for name, m in list(sys.modules.items()):
            f = getattr(m, "__file__", None)
            if f and str(Path(f).resolve()) in stale:
                del sys.modules[name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    _DEFINED.pop(mod_name, None)  # an earlier import's metrics are replaced by this one's
    _forget_other_folders_helpers(path.parent)
    _PLUGIN_FOLDERS.add(path.parent)
    folder = str(path.parent)
    added = folder not in sys.path
    if added:  # `from _shared import X` beside the plugin; appended, so it shadows no installed module
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except QualmetError as exc:
        sys.modules.pop(mod_name, None)
        raise QualmetError(f"{path}: {exc}") from None
    except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end qualmet silently
        sys.modules.pop(mod_name, None)
        raise QualmetError(f"{path}: plugin failed to import: {type(exc).__name__}: {exc}") from None
    finally:
        if added:  # only while the plugin loads: two folders' helpers of one name must not meet
            sys.path.remove(folder)
    return module


def _forget_other_folders_helpers(folder: Path) -> None:
    """Drop from ``sys.modules`` the helper modules another plugin folder imported under a name this
    folder also has (two folders' ``_shared.py``): each plugin then imports its own, as a plugin loaded
    before keeps the module objects it already holds."""
    try:
        names = {f.stem for f in folder.glob("*.py")} | {d.name for d in folder.iterdir() if (d / "__init__.py").is_file()}
    except OSError:
        return
    for name in names:
        m = sys.modules.get(name)
        f = getattr(m, "__file__", None) if m is not None else None
        if f:
            home = Path(f).resolve().parent
            home = home.parent if Path(f).name == "__init__.py" else home
            if home != folder and home in _PLUGIN_FOLDERS:
                del sys.modules[name]


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
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")
        for spec in _specs_in_module(mod, f"builtin ({BUILTIN_PACKAGE}.{info.name})"):
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
        specs = {id(s.func): s for m in modules for s in _specs_in_module(m, src)}.values()
        if not inspect.ismodule(obj):
            specs = [s for s in specs if s.func is obj]
        for spec in sorted(specs, key=lambda s: s.name):
            reg.add(spec)


def load_plugin_source(reg: Registry, source: str | Path, loaded: set[Path] | None = None) -> None:
    """Register the metrics of a user plugin file or folder. Files already in ``loaded`` (the same
    file reached through a folder and by name, say) are skipped, not reported as clashing with themselves."""
    loaded = set() if loaded is None else loaded
    found = 0
    for f in plugin_files(source):
        r = Path(f).resolve()
        if r in loaded:  # loaded already (through its folder, say): what it registered then counts
            found += sum(1 for spec in reg.metrics.values() if spec.source == str(r))
            continue
        loaded.add(r)
        specs = _specs_in_module(_import_file(f), str(r))
        found += len(specs)
        for spec in specs:
            reg.add(spec)
    if not found:
        raise QualmetError(f"{source}: defines no metric (decorate a function with @qualmet.metric; "
                           "in a folder, files whose names start with _ are helpers)")


_CACHE: dict[tuple[str, ...], Registry] = {}


# What a metric's values depend on besides its own file: the context (this module), the code that
# fills it, calls plugins and checks what they return (qualmet.compute), the box helpers plugins may
# import, and how images are decoded. Part of every cache key.
PLUGIN_API_MODULES = ("qualmet.registry", "qualmet.compute", "qualmet.boxes", "qualmet.imageio")


@functools.cache
def plugin_api_digest() -> str:
    """Hash of the source of :data:`PLUGIN_API_MODULES`: a qualmet change there recomputes cached
    metric values instead of reusing them."""
    h = hashlib.sha256()
    for name in PLUGIN_API_MODULES:
        h.update(name.encode() + b"\0" + Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()[:16]


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


def format_table(specs: list[MetricSpec]) -> str:
    """The ``qualmet metrics list`` table: name, level, needs, worse, version, description, source."""
    rows = [("NAME", "LEVEL", "NEEDS", "WORSE", "VER", "DESCRIPTION", "SOURCE")]
    for s in specs:
        desc = s.description if len(s.description) <= 70 else s.description[:67] + "..."
        rows.append((s.name, s.level, ",".join(sorted(s.needs)) or "-", s.worse, s.version, desc, s.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)
