"""The ``@qualmet.metric`` decorator and :class:`MetricSpec`: a metric is a function plus what it
needs, its level, which end of its scale is suspicious (``worse``) and a version.

Decorating a function records it in ``_DEFINED`` under the module that defines it; discovery
(:mod:`qualmet.discovery`) reads that record after importing a plugin's module.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import QualmetError
from .metric_run import FRAME_BASE, OBJECT_BASE

LEVELS = ("object", "frame")
WORSE = ("low", "high")
NEEDS = frozenset({"pixels", "predictions"})
_SPEC_ATTR = "__qualmet_metric__"
# columns of objects.parquet / frames.parquet that a metric column must not replace
RESERVED_NAMES = frozenset(OBJECT_BASE + FRAME_BASE)
# every decorated function, by the module it was defined in (registration does not depend on the
# module's globals: a metric defined in a function body, or two functions sharing a Python name, count)
_DEFINED: dict[str, dict[tuple[str, str], tuple[Callable[..., Any], "MetricSpec"]]] = {}


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
    source_hash: str = ""  # hash of the .py files of the plugin's folder (discovery.folder_hash): edits recompute

    @property
    def needs_pixels(self) -> bool:
        return "pixels" in self.needs

    @property
    def needs_predictions(self) -> bool:
        return "predictions" in self.needs

    @property
    def key(self) -> str:
        """Identity for caching: name, version and the source of the plugin's folder."""
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
