"""Run metrics over a data set: per-frame work in parallel chunks, label-only work vectorised, cached.

A run goes load -> plan -> cached chunks -> computed chunks -> vectorised metrics -> finalize ->
run.json. The per-frame work is one pure function, :func:`qualmet.compute.compute_chunk`, mapped
over chunk tasks by an executor (:mod:`qualmet.executors`: a process pool or this process; Dask in
:mod:`qualmet.dask_executor`). Each finished chunk is written at once to ``RUN_DIR/chunks/`` keyed
by its frames and each metric's name, version and source hash (:mod:`qualmet.chunks`), so a rerun
(or a run resumed after Ctrl-C or SIGKILL) computes only what is missing or changed.

Runs stream: chunk tasks are built one at a time as the executor has room (at most ``2 * workers``
in flight), and each result is copied into preallocated output columns as it arrives
(:mod:`qualmet.metric_tables`), so memory holds the data set, the final tables and a few chunks,
not every chunk's partial tables (``benchmarks/bench_memory.py``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import pandas as pd

from . import __version__, atomic
from .chunks import ChunkPlan, cache_key, dataset_hash, file_stamp, hash_df, hash_table, read_chunk, read_index, write_chunk
from .compute import (PARTIAL, ChunkResult, ChunkTask, call_finalize, call_vectorised, compute_chunk, error_record,
                      split_task)
from .dataset import Dataset
from .environment import METRIC_LIBRARIES, digest, versions
from .errors import QualmetError
from .executors import Executor, LocalExecutor, SerialExecutor, is_killed_worker, is_worker_death
from .metric_run import FRAME_BASE, OBJECT_BASE, MetricRun
from .metric_tables import Tables
from .registry import MetricSpec, Registry, load_registry, plugin_api_digest

__all__ = ["DEFAULT_CHUNK_SIZE", "MetricRun", "run_metrics", "summarise", "recorded_image_root", "dataset_hash"]

# frames per task; fixed (not derived from --workers) so cache keys stay stable. 32 rather than 16:
# half the per-chunk bookkeeping (7% of a run) and still 32 tasks per 1,000 frames to spread.
DEFAULT_CHUNK_SIZE = 32
PREDICTION_COLUMNS = ["image_id", "category_id", "x", "y", "w", "h", "score"]  # what a prediction key hashes


def recorded_image_root(info: dict, dataset_path: str | os.PathLike) -> str | None:
    """The image root a run's run.json records, if the run was computed on ``dataset_path`` (the root
    belongs to that file) and the folder still exists; else None."""
    d = info.get("dataset") or {}
    recorded, root = d.get("path"), d.get("image_root")
    if not recorded or recorded.startswith("<") or not root:
        return None
    same = os.path.abspath(dataset_path) == os.path.abspath(recorded)
    return root if same and Path(root).is_dir() else None


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
            preds = load_predictions(predictions, ds)
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
    specs = _chosen(reg, metrics, preds is not None)
    workers = max(1, int(workers or os.cpu_count() or 1))
    out_dir = Path(out) if out is not None else None
    chunk_dir = out_dir / "chunks" if out_dir is not None else None
    image_root = str(ds.image_root) if ds.image_root is not None else None
    images_df = ds.images.sort_values("id", kind="stable").reset_index(drop=True)
    anns = ds.annotations
    per_frame = [s for s in specs if not s.vectorised]
    env = versions()  # recorded in run.json
    # a library upgrade, or a change in the code plugins rely on, recomputes cached values instead of reusing them
    libs = cache_key(digest(METRIC_LIBRARIES, env), plugin_api_digest())

    cp = ChunkPlan(images_df, anns, preds, chunk_size)
    got = _Gathered(cp, Tables(images_df, anns, per_frame), {
        "frames": len(images_df), "chunks": len(cp) if per_frame else 0, "chunks_computed": 0, "chunks_failed": 0,
        "decodes": 0, "computed": {s.name: 0 for s in specs}, "cached": {s.name: 0 for s in specs}})
    index = read_index(chunk_dir) if chunk_dir is not None else {}
    plan = _plan(cp, per_frame, index if chunk_dir is not None else None, image_root, preds, libs, got.counters)
    _read_cached(plan, index, reg, got)

    t_compute = time.perf_counter()
    todo = [ci for ci, c in enumerate(plan) if c.todo]
    if todo:
        def tasks() -> Iterator[ChunkTask]:  # built one at a time, as the executor asks for them
            for ci in todo:
                names = plan[ci].todo
                yield ChunkTask(ci, cp.records(ci), cp.annotations(ci),
                                cp.predictions(ci) if any(reg[n].needs_predictions for n in names) else None,
                                names, reg.plugin_sources, image_root, entry_points,
                                {n: reg[n].key for n in names}, plugin_api_digest())

        if executor is None and executor_spec is not None and executor_spec[0] == "dask":
            from .dask_executor import DaskExecutor

            executor = DaskExecutor(executor_spec[1], n_workers=min(workers, len(todo)))
        # workers=1 runs in this process; otherwise even a single chunk goes to a worker process, so a
        # plugin that kills its process (native crash, out of memory) costs its frame, not the run
        ex = executor or (SerialExecutor() if workers == 1 else LocalExecutor(min(workers, len(todo))))
        _compute(ex, tasks(), sum(cp.n_frames(ci) for ci in todo), plan, chunk_dir, got, progress)
    compute_s = time.perf_counter() - t_compute

    objects = got.tables.objects(anns)
    frames = got.tables.frames(images_df)
    ds_hash = dataset_hash(ds)  # identifies the data set in run.json (select and errors check it); taken
    # before any vectorised plugin holds the tables
    _run_vectorised([s for s in specs if s.vectorised], anns, images_df, preds, chunk_dir, libs, got, objects, frames)
    _run_finalize(per_frame, anns, got, objects)
    objects = objects[OBJECT_BASE + [s.name for s in specs if s.level == "object"]]
    frames = frames[FRAME_BASE + [s.name for s in specs if s.level == "frame"]]

    info = _manifest(ds, ds_hash, preds, src, reg, specs, env, got, workers=workers, chunk_size=chunk_size,
                     timings={"total_s": round(time.perf_counter() - t_start, 4), "compute_s": round(compute_s, 4)})
    run = MetricRun(objects, frames, info)
    if out_dir is not None:
        info["timings"]["total_s"] = round(time.perf_counter() - t_start, 4)
        run.save(out_dir)
    return run


def _chosen(reg: Registry, metrics: Iterable[str] | str | None, have_predictions: bool) -> list[MetricSpec]:
    """The metrics to run: those named (all registered ones for None), less those needing predictions
    when there are none; naming one of those without predictions is an error."""
    explicit = metrics is not None
    specs = reg.select((metrics if isinstance(metrics, str) else list(metrics)) if explicit else None)
    if not have_predictions:
        missing = [s.name for s in specs if s.needs_predictions]
        if missing and explicit:
            raise QualmetError(f"metric(s) {', '.join(missing)} need predictions; pass --predictions P.json")
        specs = [s for s in specs if not s.needs_predictions]
    if not specs:
        raise QualmetError("no metrics to run")
    return specs


@dataclass
class _Gathered:
    """What a run has gathered so far from cached and computed chunks: the tables being filled, the
    counters, errors, skipped frames and seconds per metric for run.json."""

    plan: ChunkPlan
    tables: Tables
    counters: dict[str, Any]
    errors: list[dict] = field(default_factory=list)
    skipped: dict[int, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def absorb(self, ci: int, objects: pd.DataFrame, frames: pd.DataFrame, meta: dict) -> None:
        """Chunk ``ci``'s rows into the tables, its errors and skipped frames into the record."""
        self.tables.put(objects, frames, self.plan.annotation_rows(ci), self.plan.frame_rows(ci))
        self.errors.extend(meta["errors"])
        for sk in meta["skipped"]:
            self.skipped.setdefault(int(sk["image_id"]), sk)

    def tally(self, res: ChunkResult) -> None:
        self.counters["decodes"] += res.decodes
        for name, s in res.seconds.items():
            self.took(name, s)

    def took(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


class _Chunk(NamedTuple):
    keys: dict[str, str]  # metric name -> cache key ("" when nothing is cached)
    todo: list[str]  # the metrics to compute on this chunk (the others are in the cache)


def _plan(cp: ChunkPlan, per_frame: list[MetricSpec], index: dict[str, Path] | None, image_root: str | None,
          preds: pd.DataFrame | None, libs: str, counters: dict) -> list[_Chunk]:
    """Each chunk's cache key per metric, from the chunk's frames, labels, image files and predictions,
    and which metrics are not in ``index`` (every one when ``index`` is None: no output folder, so
    nothing is hashed or stat-ed). Chunks are row ranges found by position; nothing per image or per
    chunk is copied up front."""
    any_pixels = any(s.needs_pixels for s in per_frame)
    path_cache: dict = {}  # resolved folders, for this planning pass only
    plan: list[_Chunk] = []
    for ci in range(len(cp)):
        if index is None:
            keys, todo = {s.name: "" for s in per_frame}, [s.name for s in per_frame]
        else:
            ch = cp.records(ci)
            lab = cache_key(json.dumps(ch, default=str), hash_table(cp.annotations(ci)))
            pix = cache_key(*[file_stamp(image_root, r["file_name"], path_cache) for r in ch]) if any_pixels else ""
            prd = hash_df(cp.predictions(ci), PREDICTION_COLUMNS) if preds is not None else ""
            keys = {s.name: cache_key(lab, pix if s.needs_pixels else "", prd if s.needs_predictions else "", s.key, libs)
                    for s in per_frame}
            todo = [n for n, k in keys.items() if k not in index]
        for s in per_frame:
            counters["computed" if s.name in todo else "cached"][s.name] += cp.n_frames(ci)
        plan.append(_Chunk(keys, todo))
    return plan


def _read_cached(plan: list[_Chunk], index: dict[str, Path], reg: Registry, got: _Gathered) -> None:
    """Fill the tables with every cached (chunk, metric) pair of ``plan``, each chunk file read once."""
    by_file: dict[Path, list[int]] = {}
    for ci, c in enumerate(plan):
        for n, k in c.keys.items():
            if n not in c.todo and ci not in by_file.setdefault(index[k], []):
                by_file[index[k]].append(ci)
    for fpath, cis in by_file.items():
        o, f, meta = read_chunk(fpath)
        for ci in cis:
            c = plan[ci]
            wanted = [n for n, k in c.keys.items() if n not in c.todo and meta["keys"].get(n) == k]
            ocols = [col for n in wanted for col in (n, PARTIAL + n) if col in o.columns]
            fcols = [n for n in wanted if n in f.columns]
            got.absorb(ci, o[["annotation_id", "image_id"] + ocols], f[["image_id"] + fcols],
                       {"errors": [{**e, "cached": True} for e in meta["errors"] if e["metric"] in wanted],
                        "skipped": meta["skipped"] if any(reg[n].needs_pixels for n in wanted) else []})
        del o, f


def _compute(ex: Executor, tasks: Iterable[ChunkTask], n_frames: int, plan: list[_Chunk], chunk_dir: Path | None,
             got: _Gathered, progress: bool) -> None:
    """Run ``tasks`` on ``ex`` with a progress bar over their ``n_frames`` frames; the executor is
    closed at the end, and cancelled if the run is interrupted."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_frames, unit="frame", desc="metrics", disable=not progress, dynamic_ncols=True)
    try:
        _Computation(ex, plan, chunk_dir, got, bar).run(tasks)
    except BaseException:
        try:
            ex.close(cancel=True)
        except BaseException:  # noqa: BLE001 - a failing shutdown must not hide the Ctrl-C or error that caused it
            pass
        raise
    finally:
        bar.close()
    ex.close()


class _Computation:
    """Computes chunks on an executor and caches each as it finishes.

    A chunk whose worker process died (a plugin's native crash, the out-of-memory killer) is split
    into its frames, each run again, so only the frame that kills its worker is lost. Frames lost
    with a Dask worker another task may have killed are rerun one at a time at the end."""

    def __init__(self, ex: Executor, plan: list[_Chunk], chunk_dir: Path | None, got: _Gathered, bar: Any):
        self.ex, self.plan, self.chunk_dir, self.got, self.bar = ex, plan, chunk_dir, got, bar
        self.parts: dict[int, dict] = {}  # chunks whose worker died, being rerun a frame at a time

    def run(self, tasks: Iterable[ChunkTask]) -> None:
        work: Iterable[ChunkTask] | None = tasks
        suspects: list[ChunkTask] = []  # frames lost with a worker another task may have killed
        alone = False
        while work is not None:
            requeue: list[ChunkTask] = []
            for task, res in (self._one_at_a_time(work) if alone else self.ex.map_unordered(compute_chunk, work)):
                if task.index in self.parts:
                    if is_killed_worker(res) and not alone:  # perhaps only queued on the dying worker
                        suspects.append(task)
                    else:
                        self._finish_part(task, res)
                elif is_worker_death(res) and len(task.frames) > 1:
                    # one of its frames killed the worker: each frame is run alone, so only that
                    # frame is lost and the rest of the chunk is computed
                    self.parts[task.index] = {"left": len(task.frames), "failed": False, "results": [],
                                              "order": {int(fr["image_id"]): k for k, fr in enumerate(task.frames)}}
                    requeue.extend(split_task(task))
                elif isinstance(res, BaseException):  # the chunk as a whole failed (e.g. its one frame killed the worker)
                    self._fail(task, res)
                    self.got.counters["chunks_failed"] += 1
                    self.bar.update(len(task.frames))
                else:
                    meta = self._save(task, res.objects, res.frames,
                                      {"errors": res.errors, "skipped": res.skipped, "decodes": res.decodes,
                                       "seconds": res.seconds, "frames": [fr["image_id"] for fr in task.frames]})
                    self.got.absorb(task.index, res.objects, res.frames, meta)
                    self.got.counters["chunks_computed"] += 1
                    self.got.tally(res)
                    self.bar.update(len(task.frames))
            if requeue:
                work, alone = requeue, False
            else:
                work, alone, suspects = (suspects or None), True, []

    def _one_at_a_time(self, ts: list[ChunkTask]) -> Iterator[tuple[ChunkTask, Any]]:
        for t in ts:  # nothing else in flight: if a worker dies now, this task killed it
            yield from self.ex.map_unordered(compute_chunk, [t])

    def _fail(self, task: ChunkTask, exc: BaseException) -> None:
        """Every metric of every frame of ``task``: one error each."""
        for fr in task.frames:
            for n in task.metric_names:
                self.got.errors.append(error_record(n, fr["image_id"], fr["file_name"], exc))

    def _save(self, task: ChunkTask, objects: pd.DataFrame, frames: pd.DataFrame, meta: dict) -> dict:
        """The chunk's cache file (keyed by its metrics' keys), written when there is an output folder."""
        meta = {"keys": {n: self.plan[task.index].keys[n] for n in task.metric_names}, **meta}
        if self.chunk_dir is not None:
            write_chunk(self.chunk_dir / f"{cache_key(*sorted(meta['keys'].values()))}.parquet", objects, frames, meta)
        return meta

    def _finish_part(self, task: ChunkTask, res: Any) -> None:
        """One frame of a split chunk is back; once all are, the chunk is cached as usual (unless a
        frame failed as a whole: a rerun tries it again, as a worker death may not recur)."""
        p = self.parts[task.index]
        if isinstance(res, BaseException):
            p["failed"] = True
            self._fail(task, res)
        else:
            self.got.absorb(task.index, res.objects, res.frames, {"errors": res.errors, "skipped": res.skipped})
            p["results"].append(res)
            self.got.tally(res)
        p["left"] -= 1
        self.bar.update(len(task.frames))
        if p["left"]:
            return
        if p["failed"]:
            self.got.counters["chunks_failed"] += 1
            return
        self.got.counters["chunks_computed"] += 1
        if self.chunk_dir is None:
            return
        rs = sorted(p["results"], key=lambda r: p["order"][int(r.frames["image_id"].iloc[0])])
        self._save(task, pd.concat([r.objects for r in rs], ignore_index=True),
                   pd.concat([r.frames for r in rs], ignore_index=True),
                   {"errors": [e for r in rs for e in r.errors], "skipped": [k for r in rs for k in r.skipped],
                    "decodes": sum(r.decodes for r in rs), "seconds": {}, "frames": list(p["order"])})


def _run_vectorised(vectorised: list[MetricSpec], anns: pd.DataFrame, images_df: pd.DataFrame,
                    preds: pd.DataFrame | None, chunk_dir: Path | None, libs: str, got: _Gathered,
                    objects: pd.DataFrame, frames: pd.DataFrame) -> None:
    """Vectorised metrics: one call each for the whole data set, cached by the whole data set's
    content; a failing one is NaN everywhere and one error."""
    labels = cache_key(hash_table(images_df), hash_table(anns))
    prd = hash_df(preds, PREDICTION_COLUMNS) if preds is not None else ""
    for s in vectorised:
        key = cache_key(labels, prd if s.needs_predictions else "", s.key, libs)
        cache = chunk_dir / f"vec-{s.name}-{key}.parquet" if chunk_dir is not None else None
        values = None
        if cache is not None and cache.is_file():
            values = pd.read_parquet(cache)["value"].to_numpy()
            got.counters["cached"][s.name] += len(images_df)
        else:
            t0 = time.perf_counter()
            try:
                values = call_vectorised(s, anns, images_df, preds)
            except (Exception, SystemExit) as exc:
                got.errors.append(error_record(s.name, None, None, exc, s.func))
            got.took(s.name, time.perf_counter() - t0)
            got.counters["computed"][s.name] += len(images_df)
            if values is not None and cache is not None:
                with atomic.atomic_path(cache) as tmp:
                    pd.DataFrame({"value": values}).to_parquet(tmp, index=False)
        target = objects if s.level == "object" else frames
        target[s.name] = values if values is not None else math.nan


def _run_finalize(per_frame: list[MetricSpec], anns: pd.DataFrame, got: _Gathered, objects: pd.DataFrame) -> None:
    """Finalize metrics: per-object vectors -> values, with the whole data set in view (never cached)."""
    for s in per_frame:
        if s.finalize is None:
            continue
        t0 = time.perf_counter()
        try:
            objects[s.name] = call_finalize(s, got.tables.partials(s.name), anns)
        except (Exception, SystemExit) as exc:
            got.errors.append(error_record(s.name, None, None, exc, s.finalize))
            objects[s.name] = math.nan
        got.took(s.name, time.perf_counter() - t0)


def _manifest(ds: Dataset, ds_hash: str, preds: pd.DataFrame | None, src: dict, reg: Registry, specs: list[MetricSpec], env: dict,
              got: _Gathered, workers: int, chunk_size: int, timings: dict) -> dict[str, Any]:
    """run.json's content: inputs and their hashes, metrics and their sources, counters, timings, errors."""
    errors = sorted(got.errors, key=lambda e: (e["metric"], -1 if e["image_id"] is None else e["image_id"]))
    return {
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
        "workers": workers, "chunk_size": chunk_size, "counters": got.counters,
        "timings": {**timings, "seconds_in_workers": {k: round(v, 4) for k, v in sorted(got.seconds.items())}},
        "errors": errors,
        "errors_by_metric": {m: sum(e["metric"] == m for e in errors) for m in sorted({e["metric"] for e in errors})},
        "skipped_frames": sorted(got.skipped.values(), key=lambda d: d["image_id"]),
        "outputs": {},
    }


def _at(error: dict) -> str:
    """" (at FILE:LINE in FUNCTION)" for an error raised in a plugin's code (records cached before
    qualmet recorded the place have none)."""
    return f" (at {error['where']})" if error.get("where") else ""


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
        work = "no per-frame work"
    vec = [m["name"] for m in i["metrics"] if m.get("vectorised")]
    if vec:
        done = sum(1 for n in vec if c["computed"].get(n))
        work += f"; label-only metrics: {done} computed, {len(vec) - done} from the cache"
    n = len(i["metrics"])
    lines = [f"{c['frames']} frames, {len(run.objects)} objects, {n} metric{'s' if n != 1 else ''}; {work}; "
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
            from_cache = sum(1 for e in per_frame if e.get("cached"))
            share = "all" if from_cache == len(per_frame) else from_cache
            again = "" if not from_cache else (f" [{share} of them recorded with cached values: bump the metric's "
                                               "version, or delete the run's chunks/ folder, to try again]")
            lines.append(f"error: metric {m} failed on {len(per_frame)} frame(s); first: image {first['image_id']} "
                         f"({first['file_name']}): {first['error']}{_at(first)}{again}")
        for e in errs:
            if e["image_id"] is None:  # a vectorised or finalize call: one error for the whole data set
                lines.append(f"error: metric {m} failed on the whole data set: {e['error']}{_at(e)}")
    if i["skipped_frames"]:
        sk = i["skipped_frames"][0]
        lines.append(f"skipped: {len(i['skipped_frames'])} frame(s) without pixel metrics; first: image {sk['image_id']}: {sk['reason']}")
    if out is not None:
        lines.append(f"wrote {Path(out) / 'objects.parquet'}, {Path(out) / 'frames.parquet'}, {Path(out) / 'run.json'}")
    return "\n".join(lines)
