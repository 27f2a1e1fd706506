"""Calling metric plugins: the pure per-chunk function and the whole-data-set calls, with every
return value checked.

:func:`compute_chunk` (frames + metric names + plugin sources -> partial tables) is what executors
run, in this process, a worker process or a Dask worker; it depends on nothing but its task, so any
executor that can map a function over picklable tasks can run it.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from . import imageio as _imageio
from .errors import ImageError, QualmetError
from .paths import safe_join
from .context import MetricContext, private_copy
from .discovery import load_registry
from .plugin import MetricSpec

PARTIAL = "__partial__"  # prefix of per-object vector columns awaiting a finalize step

_HEAP_PAD = 16 << 20  # bytes of freed heap glibc keeps at the top instead of returning to the OS


@functools.cache  # once per process
def _keep_freed_heap() -> None:
    """Every frame allocates and frees a few image-sized buffers; by default glibc hands the freed
    top of the heap back to the OS and page-faults it in again for the next frame. Keeping 16 MB
    (M_TOP_PAD) makes the per-frame work ~15% faster. glibc only; elsewhere nothing happens."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-2, _HEAP_PAD)  # -2 = M_TOP_PAD
    except (OSError, AttributeError):  # not glibc: the allocator's own policy stands
        pass


@dataclass
class ChunkTask:
    """Everything needed to compute some metrics on some frames; picklable, no functions inside."""

    index: int
    frames: list[dict]  # image_id, file_name, width, height
    annotations: pd.DataFrame  # the annotations of these frames
    predictions: pd.DataFrame | None
    metric_names: list[str]
    plugin_sources: tuple[str, ...]
    image_root: str | None
    entry_points: bool = True
    metric_keys: dict[str, str] = field(default_factory=dict)  # name -> MetricSpec.key the caller loaded
    qualmet_version: str = ""  # the caller's


@dataclass
class ChunkResult:
    """Partial tables for one chunk plus what went wrong and how long it took."""

    index: int
    objects: pd.DataFrame  # annotation_id, image_id, one column per object metric (and partial vectors)
    frames: pd.DataFrame  # image_id, one column per frame metric
    errors: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    decodes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def compute_chunk(task: ChunkTask) -> ChunkResult:
    """Compute ``task.metric_names`` on ``task.frames``: each image decoded at most once, a metric
    that raises gives NaN and an error record, an undecodable image gives NaN pixel metrics."""
    _keep_freed_heap()
    specs = _current_specs(task)
    obj_specs = [s for s in specs if s.level == "object"]
    frame_specs = [s for s in specs if s.level == "frame"]
    need_pixels = any(s.needs_pixels for s in specs)
    anns_all = task.annotations.sort_values("image_id", kind="stable")
    boxes_all = anns_all[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    ann_ids_all = anns_all["id"].to_numpy(dtype=np.int64)
    anns_by = _row_ranges(anns_all["image_id"].to_numpy())
    preds_by: dict[int, pd.DataFrame] = {}
    empty_p = None
    if task.predictions is not None:
        preds_by = {int(k): g for k, g in task.predictions.groupby("image_id", sort=False)}
        empty_p = task.predictions.iloc[0:0]
    obj_cols: dict[str, list] = {"annotation_id": [], "image_id": []}
    for s in obj_specs:
        obj_cols[PARTIAL + s.name if s.finalize else s.name] = []
    frame_cols: dict[str, list] = {"image_id": []}
    for s in frame_specs:
        frame_cols[s.name] = []
    errors: list[dict] = []
    skipped: list[dict] = []
    seconds: dict[str, float] = {s.name: 0.0 for s in specs}
    seconds["decode"] = 0.0
    decodes = 0

    path_cache: dict = {}  # resolved image folders, for this chunk
    for fr in task.frames:
        iid = int(fr["image_id"])
        a0, a1 = anns_by.get(iid, (0, 0))
        image = None
        if need_pixels:
            t0 = time.perf_counter()
            image = _decode(task.image_root, fr, path_cache, skipped)
            decodes += image is not None  # images decoded, not tried: a run whose images are all missing says 0
            seconds["decode"] += time.perf_counter() - t0
        # one context for the frame's metrics, each of which (ctx.begin) sees only the inputs it declares;
        # the frame's annotation rows are sliced out only if a metric reads ctx.annotations
        ctx = MetricContext(iid, fr["file_name"], fr["width"], fr["height"], (anns_all, a0, a1),
                            preds_by.get(iid, empty_p) if task.predictions is not None else None, image,
                            boxes=boxes_all[a0:a1])
        n = a1 - a0
        obj_cols["annotation_id"].extend(ann_ids_all[a0:a1].tolist())
        obj_cols["image_id"].extend([iid] * n)
        for s in obj_specs:
            col = obj_cols[PARTIAL + s.name if s.finalize else s.name]
            if n == 0:
                continue
            if s.needs_pixels and image is None:
                col.extend([None if s.finalize else math.nan] * n)
                continue
            t0 = time.perf_counter()
            try:
                ctx.begin(s.needs)
                col.extend(_object_values(s, s.func(ctx), ctx, n))
            except (Exception, SystemExit) as exc:  # one metric failing on one frame never stops the run
                errors.append(error_record(s.name, iid, fr["file_name"], exc, s.func))
                col.extend([None if s.finalize else math.nan] * n)
            seconds[s.name] += time.perf_counter() - t0
        frame_cols["image_id"].append(iid)
        for s in frame_specs:
            col = frame_cols[s.name]
            if s.needs_pixels and image is None:
                col.append(math.nan)
                continue
            t0 = time.perf_counter()
            try:
                ctx.begin(s.needs)
                col.append(_frame_value(s.func(ctx)))
            except (Exception, SystemExit) as exc:
                errors.append(error_record(s.name, iid, fr["file_name"], exc, s.func))
                col.append(math.nan)
            seconds[s.name] += time.perf_counter() - t0
    objects = pd.DataFrame(obj_cols).astype({"annotation_id": "int64", "image_id": "int64"})
    frames = pd.DataFrame(frame_cols).astype({"image_id": "int64"})
    return ChunkResult(task.index, objects, frames, errors, skipped, decodes, seconds)


def _row_ranges(image_ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """image id -> (start, stop) of its rows, for rows sorted by image id."""
    if not len(image_ids):
        return {}
    cut = np.flatnonzero(np.diff(image_ids)) + 1
    return {int(image_ids[a]): (int(a), int(b)) for a, b in zip(np.r_[0, cut], np.r_[cut, len(image_ids)])}


def _decode(root: str | None, fr: dict, path_cache: dict, skipped: list[dict]) -> np.ndarray | None:
    """Frame ``fr``'s pixels, or None with a record in ``skipped`` saying why they cannot be read."""
    try:
        if root is None:
            raise ImageError(f"image {fr['image_id']} ({fr['file_name']}): data set has no image root")
        return _imageio.read_image(safe_join(root, fr["file_name"], cache=path_cache))
    except ImageError as exc:
        skipped.append({"image_id": int(fr["image_id"]), "file_name": fr["file_name"], "reason": str(exc)})
        return None


def _object_values(s: MetricSpec, v: Any, ctx: MetricContext, n: int) -> list:
    """An object metric's return value on one frame as its ``n`` values (vectors, for a finalize
    metric), or a ValueError saying what is wrong with it. A Series with the default 0..n-1 index is
    read by position, one indexed like ``ctx.annotations`` by label."""
    if isinstance(v, pd.Series) and not v.index.equals(pd.RangeIndex(n)):
        want = ctx.annotations.index
        if not (v.index.is_unique and len(v) == n and v.index.isin(want).all()):
            raise ValueError("returned a Series whose index is neither ctx.annotations.index nor "
                             "0..n-1; return one value per object in ctx.annotations order")
        v = v.reindex(want)
    arr = _numbers(v)
    if s.finalize:
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"returned shape {arr.shape}; a finalize metric returns (n_objects, k)")
        return list(arr)
    return _vector(arr, n, f"{n} object(s) need one number each, in ctx.annotations order").tolist()


def _frame_value(v: Any) -> float:
    """A frame metric's return value as one float, or a ValueError saying what came back instead."""
    arr = _numbers(v)
    if arr.size != 1:
        raise ValueError(f"returned shape {arr.shape}; a frame metric returns one number")
    return float(arr.reshape(-1)[0])


def _current_specs(task: ChunkTask) -> list[MetricSpec]:
    """The task's metrics as the caller loaded them. A process that outlives a run (a Dask worker)
    keeps the plugins it imported: when a plugin file changed since, it is loaded again; code that
    still differs (an edited built-in, another qualmet) is an error, never values cached as current."""
    def stale(reg) -> list[str]:
        return [n for n in task.metric_names if n not in reg or reg[n].key != task.metric_keys.get(n, reg[n].key)]

    reg = load_registry(task.plugin_sources, entry_points=task.entry_points, cached=True)
    if stale(reg):
        reg = load_registry(task.plugin_sources, entry_points=task.entry_points)
    differ = stale(reg)
    if task.qualmet_version and task.qualmet_version != __version__:
        differ.append("qualmet itself")
    if differ:
        raise QualmetError(f"this worker process runs other code than the caller for {', '.join(differ)} (it was "
                           "started before the code changed): restart the workers")
    return [reg[n] for n in task.metric_names]


def error_record(metric: str, image_id: int | None, file_name: str | None, exc: BaseException,
                 func: Any = None) -> dict:
    """One recorded failure: the metric, the frame (None for a whole-data-set call), the exception,
    and ``where`` in the plugin's code ``func`` (the metric's function, or its finalize) raised it
    (see :func:`plugin_frame`; None without ``func``, e.g. a chunk whose worker died)."""
    return {"metric": metric, "image_id": image_id, "file_name": file_name,
            "error": f"{type(exc).__name__}: {exc}", "where": plugin_frame(exc, func)}


@functools.lru_cache(maxsize=4096)
def _realpath(f: str) -> str:
    """``os.path.realpath``, cached: a metric failing on every frame names the same few files."""
    return os.path.realpath(f)


@functools.cache
def _library_roots() -> frozenset[str]:
    """Folders that hold installed packages (sysconfig's, site's, the user site's): a plugin module
    lying directly in one has only its own file as plugin code, not its neighbours."""
    import site
    import sysconfig

    roots = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += list(getattr(site, "getsitepackages", list)()) + [site.getusersitepackages()]
    return frozenset(_realpath(r) for r in roots)


def plugin_frame(exc: BaseException, func: Any) -> str | None:
    """``FILE:LINE in FUNCTION`` where the plugin's code raised ``exc``: the innermost traceback frame,
    from the call of ``func`` inward, whose file lies in ``func``'s own folder or below (its helpers;
    just its file when that folder holds installed packages). None when ``func`` is not in the
    traceback (qualmet's own check of a returned value raised it, or a worker died) or is None."""
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    home = _realpath(code.co_filename)
    folder = os.path.dirname(home)
    mine = (lambda f: f == home) if folder in _library_roots() else (lambda f: f.startswith(os.path.join(folder, "")))
    found = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if found is None and frame.f_code is not code:
            continue
        if found is None or mine(_realpath(frame.f_code.co_filename)):
            found = (frame.f_code.co_filename, lineno, frame.f_code.co_name)
    return None if found is None else f"{found[0]}:{found[1]} in {found[2]}"


def split_task(task: ChunkTask) -> list[ChunkTask]:
    """The chunk as one task per frame (same index, metrics, plugins, and the metric keys and code
    version its caller loaded, so a worker running other code still refuses each frame)."""
    a_ids = task.annotations["image_id"].to_numpy()
    p_ids = task.predictions["image_id"].to_numpy() if task.predictions is not None else None
    return [replace(task, frames=[fr], annotations=task.annotations[a_ids == fr["image_id"]],
                    predictions=task.predictions[p_ids == fr["image_id"]] if task.predictions is not None else None)
            for fr in task.frames]



def call_vectorised(s: MetricSpec, anns: pd.DataFrame, images_df: pd.DataFrame, preds: pd.DataFrame | None) -> np.ndarray:
    """One vectorised metric over the whole data set. It gets copies (cheap: copy-on-write), so one that
    changes a table in place changes nothing the next metric or the output tables see."""
    args = [private_copy(anns), private_copy(images_df)]
    if s.needs_predictions:
        args.append(private_copy(preds))
    v = s.func(*args)
    n = len(anns) if s.level == "object" else len(images_df)
    if isinstance(v, pd.Series):  # by label: image ids (frame level) or the annotations' index; missing -> NaN
        want = pd.Index(images_df["id"].to_numpy()) if s.level == "frame" else anns.index
        what = "image ids" if s.level == "frame" else "the annotations table's index"
        unknown = v.index.difference(want)
        if len(unknown) or not v.index.is_unique:
            first = f" (first unknown label: {unknown.tolist()[0]!r})" if len(unknown) else " (a label appears twice)"
            raise ValueError(f"returned a Series whose index is not a subset of {what}{first}; index it by "
                             f"{what}, or return an array in their order")
        v = v.reindex(want)
    return _vector(_numbers(v), n, f"expected {n} values, one per {'frame' if s.level == 'frame' else 'object'}")


def call_finalize(s: MetricSpec, mat: np.ndarray, anns: pd.DataFrame) -> np.ndarray:
    return _vector(_numbers(s.finalize(mat, anns.reset_index(drop=True))), len(mat),
                   f"finalize must return {len(mat)} values, one per object")


def _vector(arr: np.ndarray, n: int, what: str) -> np.ndarray:
    """``arr`` as ``n`` values when it is a 1-D array of them, or a row or a column; else a ValueError."""
    if arr.ndim in (1, 2) and arr.size == n and (arr.ndim == 1 or 1 in arr.shape):
        return arr.reshape(-1)
    raise ValueError(f"returned shape {arr.shape}; {what}")


def _numbers(v: Any) -> np.ndarray:
    """A metric's return value as a float64 array, or a ValueError that says what came back instead:
    real numbers only (integers and booleans count), NaN where a metric is not defined, never infinity."""
    if v is None:
        raise ValueError("returned None; return NaN where the metric is not defined")
    if isinstance(v, (pd.Series, pd.Index)) and pd.api.types.is_numeric_dtype(v.dtype):
        v = v.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable Int64/Float64 included
    arr = np.asarray(v)
    if arr.dtype.kind == "O" and all(x is None or isinstance(x, numbers.Real) for x in arr.reshape(-1)):
        arr = np.array([np.nan if x is None else float(x) for x in arr.reshape(-1)]).reshape(arr.shape)  # None -> NaN
    if arr.dtype.kind not in "biuf":
        what = (f"the text {v!r}" if isinstance(v, str) and len(v) <= 40 else type(v).__name__ if arr.ndim == 0
                else f"{type(v).__name__} of text" if arr.dtype.kind in "US" else f"{type(v).__name__} of dtype {arr.dtype}")
        raise ValueError(f"returned {what}; a metric returns real numbers (NaN or None where it is not defined)")
    return _finite(arr.astype(np.float64, copy=False))


def _finite(arr: np.ndarray) -> np.ndarray:
    """``arr`` if it holds no infinity: a metric value is a number or NaN ("not defined here"); an
    infinite one would break every fence, bin and rank downstream, so it is an error like a raise."""
    k = int(np.isinf(arr).sum())
    if k:
        raise ValueError(f"returned {k} infinite value(s); return NaN where the metric is not defined")
    return arr

