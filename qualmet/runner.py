"""Run metrics over a data set: per-frame work in parallel chunks, label-only work vectorised, cached.

The per-frame work is one pure function, :func:`compute_chunk` (frames + metric names + plugin
sources -> partial tables), so any executor that can map a function over picklable tasks can run
it: :class:`LocalExecutor` (a process pool) and :class:`SerialExecutor` are built in; a Dask
executor only has to implement ``map_unordered``. Each finished chunk is written at once to
``RUN_DIR/chunks/`` keyed by its frames and each metric's name, version and source hash, so a
rerun (or a run resumed after Ctrl-C or SIGKILL) computes only what is missing or changed.

Runs stream: chunk tasks are built one at a time as the executor has room (at most ``2 * workers``
in flight), and each result is copied into preallocated output columns as it arrives, so memory
holds the data set, the final tables and a few chunks, not every chunk's partial tables
(``benchmarks/bench_memory.py``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import pandas as pd

from . import __version__, atomic
from . import imageio as _imageio
from .dataset import Dataset
from .environment import METRIC_LIBRARIES, digest, versions
from .errors import ImageError, QualmetError
from .paths import safe_join
from .registry import MetricContext, MetricSpec, load_registry, plugin_api_digest

# frames per task; fixed (not derived from --workers) so cache keys stay stable. 32 rather than 16:
# half the per-chunk bookkeeping (7% of a run) and still 32 tasks per 1,000 frames to spread.
DEFAULT_CHUNK_SIZE = 32
OBJECT_BASE = ["annotation_id", "image_id", "category_id", "x", "y", "w", "h"]
FRAME_BASE = ["image_id", "file_name", "width", "height"]
_PARTIAL = "__partial__"  # prefix of per-object vector columns awaiting a finalize step
_NO_TASK = object()  # end of an executor's task iterator


# -- the pure per-chunk function ----------------------------------------------------------------

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
    api_digest: str = ""  # the caller's plugin_api_digest()


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
    ids_all = anns_all["image_id"].to_numpy()
    ann_ids_all = anns_all["id"].to_numpy(dtype=np.int64)
    anns_by = {}
    if len(ids_all):
        cut = np.flatnonzero(np.diff(ids_all)) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, len(ids_all)]
        anns_by = {int(ids_all[a]): (a, b) for a, b in zip(starts, ends)}
    preds_by: dict[int, pd.DataFrame] = {}
    empty_p = None
    if task.predictions is not None:
        preds_by = {int(k): g for k, g in task.predictions.groupby("image_id", sort=False)}
        empty_p = task.predictions.iloc[0:0]
    obj_cols: dict[str, list] = {"annotation_id": [], "image_id": []}
    for s in obj_specs:
        obj_cols[_PARTIAL + s.name if s.finalize else s.name] = []
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
            try:
                if task.image_root is None:
                    raise ImageError(f"image {iid} ({fr['file_name']}): data set has no image root")
                image = _imageio.read_image(safe_join(task.image_root, fr["file_name"], cache=path_cache))
                decodes += 1  # images decoded, not tried: a run whose images are all missing says 0
            except ImageError as exc:
                skipped.append({"image_id": iid, "file_name": fr["file_name"], "reason": str(exc)})
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
            col = obj_cols[_PARTIAL + s.name if s.finalize else s.name]
            if n == 0:
                continue
            if s.needs_pixels and image is None:
                col.extend([None if s.finalize else math.nan] * n)
                continue
            t0 = time.perf_counter()
            try:
                ctx.begin(s.needs)
                v = s.func(ctx)
                if isinstance(v, pd.Series) and not v.index.equals(pd.RangeIndex(n)):  # 0..n-1: positions
                    want = ctx.annotations.index  # else by label, as ctx.annotations is labelled
                    if not (v.index.is_unique and len(v) == n and v.index.isin(want).all()):
                        raise ValueError("returned a Series whose index is neither ctx.annotations.index nor "
                                         "0..n-1; return one value per object in ctx.annotations order")
                    v = v.reindex(want)
                arr = _numbers(v)
                if s.finalize:
                    if arr.ndim != 2 or arr.shape[0] != n:
                        raise ValueError(f"returned shape {arr.shape}; a finalize metric returns (n_objects, k)")
                    col.extend(list(arr))
                else:
                    col.extend(_vector(arr, n, f"{n} object(s) need one number each, in ctx.annotations order").tolist())
            except (Exception, SystemExit) as exc:  # one metric failing on one frame never stops the run
                errors.append(_error(s.name, iid, fr["file_name"], exc))
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
                arr = _numbers(s.func(ctx))
                if arr.size != 1:
                    raise ValueError(f"returned shape {arr.shape}; a frame metric returns one number")
                col.append(float(arr.reshape(-1)[0]))
            except (Exception, SystemExit) as exc:
                errors.append(_error(s.name, iid, fr["file_name"], exc))
                col.append(math.nan)
            seconds[s.name] += time.perf_counter() - t0
    objects = pd.DataFrame(obj_cols)
    objects["annotation_id"] = objects["annotation_id"].astype("int64")
    objects["image_id"] = objects["image_id"].astype("int64")
    frames = pd.DataFrame(frame_cols)
    frames["image_id"] = frames["image_id"].astype("int64")
    return ChunkResult(task.index, objects, frames, errors, skipped, decodes, seconds)


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
    if task.api_digest and plugin_api_digest() != task.api_digest:
        differ.append("qualmet itself")
    if differ:
        raise QualmetError(f"this worker process runs other code than the caller for {', '.join(differ)} (it was "
                           "started before the code changed): restart the workers")
    return [reg[n] for n in task.metric_names]


def _error(metric: str, image_id: int | None, file_name: str | None, exc: BaseException) -> dict:
    return {"metric": metric, "image_id": image_id, "file_name": file_name,
            "error": f"{type(exc).__name__}: {exc}"}


def _split(task: ChunkTask) -> list[ChunkTask]:
    """The chunk as one task per frame (same index, metrics and plugins)."""
    a_ids = task.annotations["image_id"].to_numpy()
    p_ids = task.predictions["image_id"].to_numpy() if task.predictions is not None else None
    return [ChunkTask(task.index, [fr], task.annotations[a_ids == fr["image_id"]],
                      task.predictions[p_ids == fr["image_id"]] if task.predictions is not None else None,
                      task.metric_names, task.plugin_sources, task.image_root, task.entry_points)
            for fr in task.frames]


# -- executors ---------------------------------------------------------------------------------

class Executor(Protocol):
    """Maps a picklable function over picklable tasks, yielding (task, result or exception) as they finish.

    ``tasks`` may be a generator: an executor takes a task only when it has room for it, so the
    tasks of a large run are never all in memory at once."""

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]: ...

    def close(self, cancel: bool = False) -> None: ...


class SerialExecutor:
    """Runs tasks in this process, in order (workers=1, debugging, tests)."""

    def map_unordered(self, fn, tasks):
        for t in tasks:
            try:
                yield t, fn(t)
            except Exception as exc:  # noqa: BLE001 - reported per chunk, the run goes on
                yield t, exc

    def close(self, cancel: bool = False) -> None:
        pass


def _worker_init(parent: int) -> None:
    """Ctrl-C is handled once, by the parent; and a worker ends with its parent: if the parent is
    killed (SIGKILL, SIGTERM), orphaned workers would otherwise wait forever, holding its stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: orphans end when their next task never comes
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class WorkerDied(RuntimeError):
    """A worker process ended abruptly (killed, out of memory, a crash in native code) while it ran
    this task alone, so the task itself is the cause."""


def _is_killed_worker(res: Any) -> bool:
    """Dask's report of a task that kept killing its workers (it also hits tasks merely queued there)."""
    return type(res).__name__ == "KilledWorker"


def _is_worker_death(res: Any) -> bool:
    return isinstance(res, WorkerDied) or _is_killed_worker(res)


def _how_ended(procs: list) -> str:
    """' (killed by signal 9, SIGKILL)' or ' (exit code 3)' for the first of ``procs`` that ended badly."""
    import signal

    for p in procs:
        c = p.exitcode
        if c is None or c == 0:
            continue
        if c < 0 and -c in signal.valid_signals():
            return f" (killed by signal {-c}, {signal.Signals(-c).name})"
        return f" (exit code {c})"
    return ""


class LocalExecutor:
    """A pool of worker processes on this machine; at most ``2 * workers`` tasks in flight.

    A worker that dies (SIGKILL, the out-of-memory killer, a segfault in a plugin's native code)
    breaks the whole pool, and every task in flight fails with it. The pool is then restarted and
    each of those tasks is run again alone: the ones that finish give their results, the one that
    kills its worker again gives :class:`WorkerDied`, and the remaining tasks go on in parallel."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self, workers: int | None = None) -> ProcessPoolExecutor:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        return ProcessPoolExecutor(max_workers=workers or self.workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(os.getpid(),))

    def _restart(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._new_pool()

    def _alone(self, fn, t):
        """Run ``t`` in a pool of its own with one process: if that process dies, ``t`` killed it, and
        its exit status is the one reported (a shared pool SIGTERMs its other workers on a break)."""
        pool = self._new_pool(1)
        try:
            pool.submit(os.getpid).result()  # the process exists now, before the task can kill it
            try:  # the pool's process table (private), read before a break can clear it
                procs = list((pool._processes or {}).values())
            except Exception:  # noqa: BLE001 - only for the message
                procs = []
            f = pool.submit(fn, t)
            exc = f.exception()
            if isinstance(exc, BrokenProcessPool):
                pool.shutdown(wait=True)  # reaps the process, so its exit status is known
                return WorkerDied(f"worker process died{_how_ended(procs)}")
            return exc if exc is not None else f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def map_unordered(self, fn, tasks):
        pending = iter(tasks)
        running: dict[Any, Any] = {}
        more = True
        while True:
            broken: list[Any] = []
            while more and len(running) < 2 * self.workers:
                t = next(pending, _NO_TASK)
                if t is _NO_TASK:
                    more = False
                    break
                try:
                    running[self.pool.submit(fn, t)] = t
                except BrokenProcessPool:  # a worker died since the last look
                    broken.append(t)
                    break
            if not running and not broken:
                break
            if not broken:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                if not any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    for f in done:
                        t = running.pop(f)
                        exc = f.exception()
                        yield t, (exc if exc is not None else f.result())
                    continue
            # The pool is broken: every task still in it fails too, and which one killed its worker
            # is unknown. Finished results are kept; the others are run again one at a time.
            wait(list(running))
            for f, t in list(running.items()):
                exc = f.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken.append(t)
                else:
                    yield t, (exc if exc is not None else f.result())
            running.clear()
            self._restart()
            for t in broken:
                yield t, self._alone(fn, t)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


# -- hashing and the chunk cache ----------------------------------------------------------------

def _hash_df(df: pd.DataFrame | None, cols: list[str]) -> str:
    h = hashlib.sha256()
    if df is not None and len(df):
        h.update(pd.util.hash_pandas_object(df[cols].reset_index(drop=True), index=False).to_numpy().tobytes())
    h.update(str(0 if df is None else len(df)).encode())
    return h.hexdigest()[:16]


def _hash_table(df: pd.DataFrame) -> str:
    """Hash of a table as plugins see it: every column (for annotations, extra COCO keys such as
    iscrowd or attributes; for images, extra keys a vectorised metric may read), so a change to any
    of them recomputes. Numeric columns hash as their bytes, object columns (lists, dicts:
    segmentation, attributes) through pickle: several times faster than row hashes or JSON text."""
    import pickle

    h = hashlib.sha256(json.dumps([(c, str(df[c].dtype)) for c in df.columns]).encode())
    for c in df.columns:
        col = df[c]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
        elif col.dtype == object:
            h.update(pickle.dumps(col.tolist(), protocol=4))
        else:  # strings, nullable integers and other extension types
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def recorded_image_root(info: dict, dataset_path: str | os.PathLike) -> str | None:
    """The image root a run's run.json records, if the run was computed on ``dataset_path`` (the root
    belongs to that file) and the folder still exists; else None."""
    d = info.get("dataset") or {}
    recorded, root = d.get("path"), d.get("image_root")
    if not recorded or recorded.startswith("<") or not root:
        return None
    same = os.path.abspath(dataset_path) == os.path.abspath(recorded)
    return root if same and Path(root).is_dir() else None


def dataset_hash(ds: Dataset) -> str:
    """Content hash of the images and annotations tables (what the metrics see)."""
    return hashlib.sha256((_hash_df(ds.images, FRAME_BASE[1:] + ["id"])
                           + _hash_df(ds.annotations, ["id", "image_id", "category_id", "x", "y", "w", "h"])).encode()
                          ).hexdigest()[:16]


def _k(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _file_stamp(root: str | None, name: str, path_cache: dict | None = None) -> str:
    if root is None:
        return "noroot"
    try:
        st = os.stat(safe_join(root, name, cache=path_cache))
        return f"{st.st_size}:{st.st_mtime_ns}"
    except (OSError, ImageError):
        return "missing"


def _read_index(chunk_dir: Path) -> dict[str, Path]:
    """Metric-chunk key -> chunk file holding it, from each file's parquet metadata."""
    import pyarrow.parquet as pq

    index: dict[str, Path] = {}
    if not chunk_dir.is_dir():
        return index
    for f in sorted(chunk_dir.glob("*.parquet")):
        try:
            meta = json.loads(pq.read_schema(f).metadata[b"qualmet"])
        except Exception:  # a foreign or damaged file is ignored (and recomputed)
            continue
        for key in meta["keys"].values():
            index[key] = f
    return index


def _write_chunk(path: Path, objects: pd.DataFrame, frames: pd.DataFrame, meta: dict) -> None:
    """One parquet file per finished chunk: object rows and frame rows, with metadata, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    o = objects.copy()
    o.insert(0, "_kind", "object")
    f = frames.copy()
    f.insert(0, "_kind", "frame")
    table = pa.Table.from_pandas(pd.concat([o, f], ignore_index=True, sort=False), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"qualmet": json.dumps(meta, allow_nan=False).encode()})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _read_chunk(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"qualmet"])
    df = table.to_pandas()
    o = df[df["_kind"] == "object"].drop(columns="_kind")
    f = df[df["_kind"] == "frame"].drop(columns="_kind")
    return o, f, meta


# -- the run ------------------------------------------------------------------------------------

@dataclass
class MetricRun:
    """What ``run_metrics`` returns: the two metric tables and the run manifest (run.json)."""

    objects: pd.DataFrame
    frames: pd.DataFrame
    info: dict[str, Any]

    @property
    def errors(self) -> list[dict]:
        return self.info["errors"]

    @property
    def skipped_frames(self) -> list[dict]:
        return self.info["skipped_frames"]

    @property
    def exit_code(self) -> int:
        """0 when every cell could be computed, 1 when a metric raised or a frame was skipped."""
        return 1 if (self.info["errors"] or self.info["skipped_frames"]) else 0


def _load_inputs(dataset: Dataset | str | os.PathLike, images: str | os.PathLike | None,
                 predictions: pd.DataFrame | str | os.PathLike | None) -> tuple[Dataset, pd.DataFrame | None, dict]:
    from .formats import load_coco, load_predictions

    src: dict[str, Any] = {}
    if isinstance(dataset, Dataset):
        ds = dataset
        if images is not None:
            from dataclasses import replace

            ds = replace(ds, image_root=Path(images))
        src["dataset_path"] = ds.source
    else:
        ds = load_coco(dataset, images=images, on_invalid="skip")
        src["dataset_path"] = str(dataset)
        src["dataset_sha256"] = atomic.sha256_file(dataset)
    preds = None
    if predictions is not None:
        if isinstance(predictions, pd.DataFrame):
            preds = predictions
            src["predictions_path"] = "<memory>"
        else:
            preds = load_predictions(predictions, ds.images)
            src["predictions_path"] = str(predictions)
            src["predictions_sha256"] = atomic.sha256_file(predictions)
    return ds, preds, src


def run_metrics(dataset: Dataset | str | os.PathLike, predictions: pd.DataFrame | str | os.PathLike | None = None,
                metrics: Iterable[str] | None = None, plugins: Iterable[str | os.PathLike] = (),
                out: str | os.PathLike | None = None, workers: int | None = None, images: str | os.PathLike | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE, executor: Executor | str | None = None, progress: bool = True,
                entry_points: bool = True) -> MetricRun:
    """Compute metrics on a data set (COCO path or Dataset) and return the object and frame tables.

    ``metrics=None`` runs every registered metric (those needing predictions only when predictions
    are given). With ``out``, writes objects.parquet, frames.parquet, run.json and a chunk cache
    there, and reuses cached chunks from earlier (or interrupted) runs into the same folder.
    ``executor`` is an Executor, or a spec string ``"local"``, ``"dask"`` (a loopback cluster of
    ``workers`` processes) or ``"dask:tcp://HOST:PORT"``; a spec starts its executor only if a chunk needs computing.
    """
    t_start = time.perf_counter()
    executor_spec = None
    if isinstance(executor, str):
        from .dask_executor import parse_executor

        executor_spec = parse_executor(executor)  # fails fast on a bad spec or a missing dask
        executor = None
    ds, preds, src = _load_inputs(dataset, images, predictions)
    reg = load_registry(plugins, entry_points=entry_points)
    explicit = metrics is not None
    specs = reg.select((metrics if isinstance(metrics, str) else list(metrics)) if explicit else None)
    if preds is None:
        missing = [s.name for s in specs if s.needs_predictions]
        if missing and explicit:
            raise QualmetError(f"metric(s) {', '.join(missing)} need predictions; pass --predictions P.json")
        specs = [s for s in specs if not s.needs_predictions]
    if not specs:
        raise QualmetError("no metrics to run")
    workers = max(1, int(workers or os.cpu_count() or 1))
    out_dir = Path(out) if out is not None else None
    chunk_dir = out_dir / "chunks" if out_dir is not None else None
    image_root = str(ds.image_root) if ds.image_root is not None else None

    images_df = ds.images.sort_values("id", kind="stable").reset_index(drop=True)
    anns = ds.annotations
    per_frame = [s for s in specs if not s.vectorised]
    vectorised = [s for s in specs if s.vectorised]
    index = _read_index(chunk_dir) if chunk_dir is not None else {}

    # cache keys: one per (chunk, metric), from the chunk's frames, labels, image files and predictions.
    # Chunks are row ranges found by position; nothing per image or per chunk is copied up front.
    cp = _ChunkPlan(images_df, anns, preds, chunk_size)
    any_pixels = any(s.needs_pixels for s in per_frame)
    plan: list[tuple[dict[str, str], list[str]]] = []
    counters = {"frames": len(images_df), "chunks": len(cp) if per_frame else 0, "chunks_computed": 0,
                "chunks_failed": 0, "decodes": 0,
                "computed": {s.name: 0 for s in specs}, "cached": {s.name: 0 for s in specs}}
    path_cache: dict = {}  # resolved folders, for this planning pass only
    env = versions()  # recorded in run.json
    # a library upgrade, or a change in the code plugins rely on, recomputes cached values instead of reusing them
    libs = _k(digest(METRIC_LIBRARIES, env), plugin_api_digest())
    for ci in range(len(cp)):
        if chunk_dir is None:  # nothing is cached or read back: no keys to compute (no hashing, no stat)
            plan.append(({s.name: "" for s in per_frame}, [s.name for s in per_frame]))
            for s in per_frame:
                counters["computed"][s.name] += cp.n_frames(ci)
            continue
        ch = cp.records(ci)
        lab = _k(json.dumps(ch, default=str), _hash_table(cp.annotations(ci)))
        pix = _k(*[_file_stamp(image_root, r["file_name"], path_cache) for r in ch]) if any_pixels else ""
        prd = _hash_df(cp.predictions(ci), ["image_id", "category_id", "x", "y", "w", "h", "score"]) if preds is not None else ""
        keys = {s.name: _k(lab, pix if s.needs_pixels else "", prd if s.needs_predictions else "", s.key, libs)
                for s in per_frame}
        todo = [n for n, k in keys.items() if k not in index]
        for s in per_frame:
            counters["cached" if s.name not in todo else "computed"][s.name] += len(ch)
        plan.append((keys, todo))

    errors: list[dict] = []
    skipped: dict[int, dict] = {}
    seconds: dict[str, float] = {}
    tables = _Tables(images_df, anns, per_frame)  # filled in place as each chunk's results arrive

    def absorb(ci: int, o: pd.DataFrame, f: pd.DataFrame, meta: dict) -> None:
        tables.put(o, f, cp.annotation_rows(ci), cp.frame_rows(ci))
        errors.extend(meta["errors"])
        for sk in meta["skipped"]:
            skipped.setdefault(int(sk["image_id"]), sk)

    # cached chunk files: each read once
    by_file: dict[Path, list[int]] = {}
    for ci, (keys, todo) in enumerate(plan):
        for n, k in keys.items():
            if n not in todo and ci not in by_file.setdefault(index[k], []):
                by_file[index[k]].append(ci)
    for fpath, cis in by_file.items():
        o, f, meta = _read_chunk(fpath)
        for ci in cis:
            keys = plan[ci][0]
            wanted = [n for n, k in keys.items() if n not in plan[ci][1] and meta["keys"].get(n) == k]
            ocols = [c for n in wanted for c in (n, _PARTIAL + n) if c in o.columns]
            fcols = [n for n in wanted if n in f.columns]
            absorb(ci, o[["annotation_id", "image_id"] + ocols], f[["image_id"] + fcols],
                   {"errors": [e for e in meta["errors"] if e["metric"] in wanted],
                    "skipped": meta["skipped"] if any(reg[n].needs_pixels for n in wanted) else []})
        del o, f

    todo_chunks = [ci for ci, (_, todo) in enumerate(plan) if todo]

    def tasks() -> Iterator[ChunkTask]:  # built one at a time, as the executor asks for them
        for ci in todo_chunks:
            todo = plan[ci][1]
            yield ChunkTask(ci, cp.records(ci), cp.annotations(ci),
                            cp.predictions(ci) if any(reg[n].needs_predictions for n in todo) else None,
                            todo, reg.plugin_sources, image_root, entry_points,
                            {n: reg[n].key for n in todo}, plugin_api_digest())

    t_compute = time.perf_counter()
    if todo_chunks:
        from tqdm.auto import tqdm

        n_tasks = len(todo_chunks)
        if executor is None and executor_spec is not None and executor_spec[0] == "dask":
            from .dask_executor import DaskExecutor

            executor = DaskExecutor(executor_spec[1], n_workers=min(workers, n_tasks))
        # workers=1 runs in this process; otherwise even a single chunk goes to a worker process, so a
        # plugin that kills its process (native crash, out of memory) costs its frame, not the run
        ex = executor or (SerialExecutor() if workers == 1 else LocalExecutor(min(workers, n_tasks)))
        bar = tqdm(total=sum(cp.n_frames(ci) for ci in todo_chunks), unit="frame", desc="metrics",
                   disable=not progress, dynamic_ncols=True)
        parts: dict[int, dict] = {}  # chunks whose worker died, being rerun a frame at a time

        def fail(task: ChunkTask, res: BaseException) -> None:  # every metric of every frame: one error each
            for fr in task.frames:
                for n in task.metric_names:
                    errors.append(_error(n, fr["image_id"], fr["file_name"], res))

        def tally(res: ChunkResult) -> None:
            counters["decodes"] += res.decodes
            for k, v in res.seconds.items():
                seconds[k] = seconds.get(k, 0.0) + v

        def save(index: int, names: list[str], objects: pd.DataFrame, frames_: pd.DataFrame, meta: dict) -> dict:
            """The chunk's cache file (keyed by its metrics' keys), written when there is an output folder."""
            meta = {"keys": {n: plan[index][0][n] for n in names}, **meta}
            if chunk_dir is not None:
                _write_chunk(chunk_dir / f"{_k(*sorted(meta['keys'].values()))}.parquet", objects, frames_, meta)
            return meta

        def finish_part(task: ChunkTask, res: Any) -> None:
            """One frame of a split chunk is back; once all are, the chunk is cached as usual (unless a
            frame failed as a whole: a rerun tries it again, as a worker death may not recur)."""
            p = parts[task.index]
            if isinstance(res, BaseException):
                p["failed"] = True
                fail(task, res)
            else:
                absorb(task.index, res.objects, res.frames, {"errors": res.errors, "skipped": res.skipped})
                p["results"].append(res)
                tally(res)
            p["left"] -= 1
            bar.update(len(task.frames))
            if p["left"]:
                return
            if p["failed"]:
                counters["chunks_failed"] += 1
                return
            counters["chunks_computed"] += 1
            if chunk_dir is None:
                return
            rs = sorted(p["results"], key=lambda r: p["order"][int(r.frames["image_id"].iloc[0])])
            save(task.index, task.metric_names, pd.concat([r.objects for r in rs], ignore_index=True),
                 pd.concat([r.frames for r in rs], ignore_index=True),
                 {"errors": [e for r in rs for e in r.errors], "skipped": [k for r in rs for k in r.skipped],
                  "decodes": sum(r.decodes for r in rs), "seconds": {}, "frames": list(p["order"])})

        def one_at_a_time(ts: list[ChunkTask]) -> Iterator[tuple[ChunkTask, Any]]:
            for t in ts:  # nothing else in flight: if a worker dies now, this task killed it
                yield from ex.map_unordered(compute_chunk, [t])

        try:
            work: Iterable[ChunkTask] | None = tasks()
            suspects: list[ChunkTask] = []  # frames lost with a worker another task may have killed
            alone = False
            while work is not None:
                requeue: list[ChunkTask] = []
                for task, res in (one_at_a_time(work) if alone else ex.map_unordered(compute_chunk, work)):
                    if task.index in parts:
                        if _is_killed_worker(res) and not alone:  # perhaps only queued on the dying worker
                            suspects.append(task)
                            continue
                        finish_part(task, res)
                        continue
                    if _is_worker_death(res) and len(task.frames) > 1:
                        # one of its frames killed the worker: each frame is run alone, so only that
                        # frame is lost and the rest of the chunk is computed
                        parts[task.index] = {"left": len(task.frames), "failed": False, "results": [],
                                             "order": {int(fr["image_id"]): k for k, fr in enumerate(task.frames)}}
                        requeue.extend(_split(task))
                        continue
                    if isinstance(res, BaseException):  # the chunk as a whole failed (e.g. its one frame killed the worker)
                        fail(task, res)
                        counters["chunks_failed"] += 1
                        bar.update(len(task.frames))
                        continue
                    meta = save(task.index, task.metric_names, res.objects, res.frames,
                                {"errors": res.errors, "skipped": res.skipped, "decodes": res.decodes,
                                 "seconds": res.seconds, "frames": [fr["image_id"] for fr in task.frames]})
                    absorb(task.index, res.objects, res.frames, meta)
                    counters["chunks_computed"] += 1
                    tally(res)
                    bar.update(len(task.frames))
                if requeue:
                    work, alone = requeue, False
                else:
                    work, alone, suspects = (suspects or None), True, []
        except BaseException:
            ex.close(cancel=True)
            raise
        finally:
            bar.close()
        ex.close()
    compute_s = time.perf_counter() - t_compute

    objects = tables.objects(anns)
    frames = tables.frames(images_df)

    # vectorised metrics: one call for the whole data set, cached by content
    ds_hash = dataset_hash(ds)  # identifies the data set in run.json (select and errors check it)
    vec_hash = {"labels": _k(_hash_table(images_df), _hash_table(anns)), "preds": _hash_df(preds, ["image_id", "category_id", "x", "y", "w", "h", "score"]) if preds is not None else ""}
    for s in vectorised:
        key = _k(vec_hash["labels"], vec_hash["preds"] if s.needs_predictions else "", s.key, libs)
        cache = chunk_dir / f"vec-{s.name}-{key}.parquet" if chunk_dir is not None else None
        values = None
        if cache is not None and cache.is_file():
            values = pd.read_parquet(cache)["value"].to_numpy()
            counters["cached"][s.name] += len(images_df)
        else:
            t0 = time.perf_counter()
            try:
                values = _call_vectorised(s, anns, images_df, preds)
            except (Exception, SystemExit) as exc:
                errors.append(_error(s.name, None, None, exc))
            seconds[s.name] = seconds.get(s.name, 0.0) + time.perf_counter() - t0
            counters["computed"][s.name] += len(images_df)
            if values is not None and cache is not None:
                with atomic.atomic_path(cache) as tmp:
                    pd.DataFrame({"value": values}).to_parquet(tmp, index=False)
        target = objects if s.level == "object" else frames
        target[s.name] = values if values is not None else math.nan

    # finalize metrics: per-object vectors -> values, with the whole data set in view
    for s in per_frame:
        if s.finalize is None:
            continue
        t0 = time.perf_counter()
        try:
            objects[s.name] = _call_finalize(s, tables.partials(s.name), anns)
        except (Exception, SystemExit) as exc:
            errors.append(_error(s.name, None, None, exc))
            objects[s.name] = math.nan
        seconds[s.name] = seconds.get(s.name, 0.0) + time.perf_counter() - t0

    objects = objects[OBJECT_BASE + [s.name for s in specs if s.level == "object"]]
    frames = frames[FRAME_BASE + [s.name for s in specs if s.level == "frame"]]
    errors.sort(key=lambda e: (e["metric"], -1 if e["image_id"] is None else e["image_id"]))
    info = {
        "qualmet_version": __version__,
        "environment": env,
        "plugin_api_digest": plugin_api_digest(),
        "dataset": {"path": src["dataset_path"], "sha256": src.get("dataset_sha256"), "hash": ds_hash,
                    "images": len(ds.images), "annotations": len(ds.annotations),
                    "image_root": str(Path(ds.image_root).resolve()) if ds.image_root is not None else None,
                    "skipped_items": [p.to_dict() for p in ds.skipped]},
        "predictions": None if preds is None else {"path": src.get("predictions_path"), "sha256": src.get("predictions_sha256"),
                                                   "count": len(preds)},
        "metrics": [{**s.describe(), "source_hash": s.source_hash, "key": s.key} for s in specs],
        "plugin_sources": list(reg.plugin_sources),
        "plugin_problems": list(reg.problems),
        "workers": workers, "chunk_size": chunk_size, "counters": counters,
        "timings": {"total_s": round(time.perf_counter() - t_start, 4), "compute_s": round(compute_s, 4),
                    "seconds_in_workers": {k: round(v, 4) for k, v in sorted(seconds.items())}},
        "errors": errors,
        "errors_by_metric": {m: sum(e["metric"] == m for e in errors) for m in sorted({e["metric"] for e in errors})},
        "skipped_frames": sorted(skipped.values(), key=lambda d: d["image_id"]),
        "outputs": {},
    }
    if out_dir is not None:
        for name, df in (("objects.parquet", objects), ("frames.parquet", frames)):
            with atomic.atomic_path(out_dir / name) as tmp:
                df.to_parquet(tmp, index=False)
            info["outputs"][name] = {"rows": len(df), "sha256": atomic.sha256_file(out_dir / name)}
        info["timings"]["total_s"] = round(time.perf_counter() - t_start, 4)
        atomic.write_json(out_dir / "run.json", info, indent=2)
    return MetricRun(objects, frames, info)


def chunk_bounds(ids: np.ndarray, size: int) -> np.ndarray:
    """Row starts of the chunks, then the row count, for image ids sorted ascending.

    A chunk is a range of image ids, not of rows: ``width`` ids, where ``width`` is ``size`` times the
    data set's typical id spacing rounded to a power of two (``size`` itself for ids 1..N). Adding
    or removing a frame then changes its own chunk only, where row ranges would shift every later
    chunk and recompute them all. A range that holds more than ``2 * size`` frames (a dense cluster
    of ids) is cut into pieces of ``size`` rows."""
    n = len(ids)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    spacing = max(1.0, (int(ids[-1]) - int(ids[0]) + 1) / n)
    width = size * 2 ** min(round(math.log2(spacing)), 62 - math.ceil(math.log2(size + 1)))  # stays an int64
    group = (ids.astype(np.int64) - 1) // width  # COCO ids start at 1: with width 32, ids 1-32, 33-64, ...
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rows: list[int] = []
    for a, b in zip(starts, np.r_[starts[1:], n]):
        rows.extend(range(int(a), int(b), size) if b - a > 2 * size else [int(a)])
    return np.asarray(rows + [n], dtype=np.int64)


class _ChunkPlan:
    """Which rows of the images, annotations and predictions tables chunk ``ci`` covers.

    Rows are found by position (one stable sort by image id, then binary search), so planning a run
    makes no per-image or per-chunk copies of the tables; a chunk's rows are sliced out when needed.
    Within a chunk, annotations (and predictions) come frame by frame, each frame's in table order.
    """

    def __init__(self, images_df: pd.DataFrame, anns: pd.DataFrame, preds: pd.DataFrame | None, chunk_size: int):
        self.images = images_df  # sorted by id
        self.size = max(1, int(chunk_size))
        self.image_ids = images_df["id"].to_numpy()
        self.bounds = chunk_bounds(self.image_ids, self.size)
        self.anns = anns
        self._a_order, self._a_ids = self._by_image(anns)
        self.preds = preds
        self._p_order, self._p_ids = self._by_image(preds) if preds is not None else (None, None)

    @staticmethod
    def _by_image(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        ids = df["image_id"].to_numpy()
        order = np.argsort(ids, kind="stable")
        return order, ids[order]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def frame_rows(self, ci: int) -> slice:
        return slice(int(self.bounds[ci]), int(self.bounds[ci + 1]))

    def n_frames(self, ci: int) -> int:
        r = self.frame_rows(ci)
        return r.stop - r.start

    def records(self, ci: int) -> list[dict]:
        """The chunk's frames as dicts (file_name, width, height, image_id), the form its cache key hashes."""
        rows = self.frame_rows(ci)
        cols = [self.images[c].iloc[rows].tolist() for c in FRAME_BASE[1:] + ["id"]]  # native Python values
        keys = FRAME_BASE[1:] + ["image_id"]
        return [dict(zip(keys, vals)) for vals in zip(*cols)]

    def _rows(self, order: np.ndarray, sorted_ids: np.ndarray, ci: int) -> np.ndarray:
        ids = self.image_ids[self.frame_rows(ci)]
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        if not (hi > lo).any():
            return np.empty(0, dtype=np.int64)
        return order[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])]

    def annotation_rows(self, ci: int) -> np.ndarray:
        """Positions in the annotations table of this chunk's annotations, in chunk order."""
        return self._rows(self._a_order, self._a_ids, ci)

    def annotations(self, ci: int) -> pd.DataFrame:
        return self.anns.iloc[self.annotation_rows(ci)]

    def predictions(self, ci: int) -> pd.DataFrame | None:
        if self.preds is None:
            return None
        return self.preds.iloc[self._rows(self._p_order, self._p_ids, ci)]


class _Tables:
    """The output columns, allocated once and filled in place as each chunk's results arrive (from
    a worker or the cache), so a run holds its final tables and never every chunk's partial tables.

    Scalar metrics are float64 columns (NaN until filled); a ``finalize`` metric's per-object
    vectors go into one (n_objects, k) float64 matrix, allocated when the first vector arrives.
    """

    def __init__(self, images_df: pd.DataFrame, anns: pd.DataFrame, per_frame: list[MetricSpec]):
        self.image_ids = images_df["id"].to_numpy()
        self.ann_ids = anns["id"].to_numpy()
        n_obj, n_frm = len(anns), len(images_df)
        self.obj = {s.name: np.full(n_obj, np.nan) for s in per_frame if s.level == "object" and not s.finalize}
        self.frm = {s.name: np.full(n_frm, np.nan) for s in per_frame if s.level == "frame"}
        self.partial: dict[str, np.ndarray | None] = {s.name: None for s in per_frame if s.finalize}
        self.partial_error: dict[str, Exception] = {}

    @staticmethod
    def _positions(got: np.ndarray, expected_ids: np.ndarray, expected_rows: np.ndarray) -> np.ndarray:
        """Table rows of a chunk's result rows: the chunk's own rows when ids line up (always, for
        results written by this runner), else matched by id (rows with an unknown id are dropped: -1)."""
        if len(got) == len(expected_ids) and np.array_equal(got, expected_ids):
            return expected_rows
        where = dict(zip(expected_ids.tolist(), expected_rows.tolist()))
        return np.array([where.get(i, -1) for i in got.tolist()], dtype=np.int64)

    def put(self, o: pd.DataFrame, f: pd.DataFrame, ann_rows: np.ndarray, frame_rows: slice) -> None:
        """Copy one chunk's object rows ``o`` and frame rows ``f`` into the output columns."""
        fr = np.arange(frame_rows.start, frame_rows.stop)
        pos = self._positions(f["image_id"].to_numpy(), self.image_ids[fr], fr)
        keep = pos >= 0
        for c in f.columns:
            if c in self.frm:
                self.frm[c][pos[keep]] = f[c].astype("float64").to_numpy()[keep]
        pos = self._positions(o["annotation_id"].to_numpy(), self.ann_ids[ann_rows], ann_rows)
        keep = pos >= 0
        for c in o.columns:
            if c in self.obj:
                self.obj[c][pos[keep]] = o[c].astype("float64").to_numpy()[keep]
            elif c.startswith(_PARTIAL) and c[len(_PARTIAL):] in self.partial:
                self._put_partial(c[len(_PARTIAL):], pos, o[c].to_numpy())

    def _put_partial(self, name: str, pos: np.ndarray, vecs: np.ndarray) -> None:
        if name in self.partial_error:
            return
        for r, v in zip(pos.tolist(), vecs):
            if r < 0 or v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            v = np.asarray(v, dtype=np.float64)
            if self.partial[name] is None:
                self.partial[name] = np.full((len(self.ann_ids), len(v)), np.nan)
            try:
                self.partial[name][r] = v
            except ValueError as exc:  # vectors of different lengths: reported when finalizing
                self.partial_error[name] = exc
                return

    def partials(self, name: str) -> np.ndarray:
        """The (n_objects, k) matrix of ``name``'s per-object vectors (NaN rows where none came)."""
        if name in self.partial_error:
            raise self.partial_error[name]
        mat = self.partial.get(name)
        return np.full((len(self.ann_ids), 0), np.nan) if mat is None else mat

    def objects(self, anns: pd.DataFrame) -> pd.DataFrame:
        out = anns[["id", "image_id", "category_id", "x", "y", "w", "h"]].rename(columns={"id": "annotation_id"})
        out = out.reset_index(drop=True)
        for c, v in self.obj.items():
            out[c] = v
        return out

    def frames(self, images_df: pd.DataFrame) -> pd.DataFrame:
        out = images_df[["id", "file_name", "width", "height"]].rename(columns={"id": "image_id"}).reset_index(drop=True)
        for c, v in self.frm.items():
            out[c] = v
        return out


def _call_vectorised(s: MetricSpec, anns: pd.DataFrame, images_df: pd.DataFrame, preds: pd.DataFrame | None) -> np.ndarray:
    """One vectorised metric over the whole data set. It gets copies (cheap: copy-on-write), so one that
    changes a table in place changes nothing the next metric or the output tables see."""
    args = [anns.copy(deep=False), images_df.copy(deep=False)]
    if s.needs_predictions:
        args.append(preds.copy(deep=False))
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


def _call_finalize(s: MetricSpec, mat: np.ndarray, anns: pd.DataFrame) -> np.ndarray:
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
        raise ValueError(f"returned {type(v).__name__} of dtype {arr.dtype}; a metric returns real numbers "
                         "(NaN or None where it is not defined)")
    return _finite(arr.astype(np.float64, copy=False))


def _finite(arr: np.ndarray) -> np.ndarray:
    """``arr`` if it holds no infinity: a metric value is a number or NaN ("not defined here"); an
    infinite one would break every fence, bin and rank downstream, so it is an error like a raise."""
    k = int(np.isinf(arr).sum())
    if k:
        raise ValueError(f"returned {k} infinite value(s); return NaN where the metric is not defined")
    return arr


def summarise(run: MetricRun, out: str | os.PathLike | None = None) -> str:
    """Human summary printed at the end of ``qualmet metrics run``."""
    i = run.info
    c = i["counters"]
    if c["chunks"]:
        failed = c.get("chunks_failed", 0)
        cached = c["chunks"] - c["chunks_computed"] - failed
        work = f"{c['chunks']} chunks: {c['chunks_computed']} computed, {cached} from the cache" \
            + (f", {failed} failed" if failed else "") + f", {c['decodes']} images decoded"
    else:
        work = "label-only metrics, no per-frame work"
    lines = [f"{c['frames']} frames, {len(run.objects)} objects, {len(i['metrics'])} metrics; {work}; "
             f"{i['timings']['total_s']:.1f} s"]
    if i["dataset"]["skipped_items"]:
        lines.append(f"data set: {len(i['dataset']['skipped_items'])} record(s) could not be loaded and were skipped (see run.json)")
    for problem in i.get("plugin_problems", []):
        lines.append(f"warning: {problem}")
    for m in i["errors_by_metric"]:
        errs = [e for e in i["errors"] if e["metric"] == m]
        per_frame = [e for e in errs if e["image_id"] is not None]
        if per_frame:  # the frames' own errors first: a finalize failing after them is usually their consequence
            first = per_frame[0]
            lines.append(f"error: metric {m} failed on {len(per_frame)} frame(s); first: image {first['image_id']} "
                         f"({first['file_name']}): {first['error']}")
        for e in errs:
            if e["image_id"] is None:  # a vectorised or finalize call: one error for the whole data set
                lines.append(f"error: metric {m} failed on the whole data set: {e['error']}")
    if i["skipped_frames"]:
        sk = i["skipped_frames"][0]
        lines.append(f"skipped: {len(i['skipped_frames'])} frame(s) without pixel metrics; first: image {sk['image_id']}: {sk['reason']}")
    if out is not None:
        lines.append(f"wrote {Path(out) / 'objects.parquet'}, {Path(out) / 'frames.parquet'}, {Path(out) / 'run.json'}")
    return "\n".join(lines)
