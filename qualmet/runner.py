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
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from . import __version__, atomic
from .chunks import ChunkPlan, cache_key, file_stamp, hash_df, hash_table, read_chunk, read_index
from .compute import PARTIAL, ChunkTask, call_finalize, call_vectorised, error_record
from .computing import _Chunk, _compute, _Gathered
from .dataset import Dataset
from .discovery import Registry, load_registry
from .environment import METRIC_LIBRARIES, digest, versions
from .errors import QualmetError
from .executors import Executor, LocalExecutor, SerialExecutor
from .log import logger
from .metric_run import FRAME_BASE, OBJECT_BASE, MetricRun
from .metric_tables import Tables
from .plugin import MetricSpec
from .steps import dataset_hash

__all__ = ["DEFAULT_CHUNK_SIZE", "MetricRun", "run_metrics"]

# frames per task; fixed (not derived from --workers) so cache keys stay stable. 32 rather than 16:
# half the per-chunk bookkeeping (7% of a run) and still 32 tasks per 1,000 frames to spread.
DEFAULT_CHUNK_SIZE = 32
PREDICTION_COLUMNS = ["image_id", "category_id", "x", "y", "w", "h", "score"]  # what a prediction key hashes


def _load_inputs(dataset: Dataset | str | os.PathLike, images: str | os.PathLike | None,
                 predictions: pd.DataFrame | str | os.PathLike | None,
                 match_by: str = "id") -> tuple[Dataset, pd.DataFrame | None, dict]:
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
            preds = load_predictions(predictions, ds, match_by=match_by)
            src["predictions_path"] = str(predictions)
            src["predictions_sha256"] = atomic.sha256_file(predictions)
    return ds, preds, src


def run_metrics(dataset: Dataset | str | os.PathLike, predictions: pd.DataFrame | str | os.PathLike | None = None,
                metrics: Iterable[str] | None = None, plugins: Iterable[str | os.PathLike] = (),
                out: str | os.PathLike | None = None, workers: int | None = None, images: str | os.PathLike | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE, executor: Executor | str | None = None, progress: bool = False,
                entry_points: bool = True, match_by: str = "id") -> MetricRun:
    """Compute metrics on a data set (COCO path or Dataset) and return the object and frame tables.

    ``metrics=None`` runs every registered metric (those needing predictions only when predictions
    are given). With ``out``, writes objects.parquet, frames.parquet, run.json and a chunk cache there,
    and reuses cached chunks from earlier (or interrupted) runs into the same folder.
    ``executor`` is an Executor, or a spec string ``"local"``, ``"dask"`` (a loopback cluster of
    ``workers`` processes) or ``"dask:tcp://HOST:PORT"``; a spec starts its executor only if a chunk needs computing.
    ``match_by="file_name"``: predictions name their frames by file name or stem (Ultralytics)."""
    t_start = time.perf_counter()
    executor_spec = None
    if isinstance(executor, str):
        from .dask_executor import parse_executor

        executor_spec = parse_executor(executor)  # fails fast on a bad spec or a missing dask
        executor = None
    ds, preds, src = _load_inputs(dataset, images, predictions, match_by)
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
    # a library or qualmet upgrade recomputes cached values instead of reusing them (qualmet's own code
    # is keyed by its version, not its source: bump the version when the context or the checks change)
    libs = cache_key(digest(METRIC_LIBRARIES, env), __version__)

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
                                {n: reg[n].key for n in names}, __version__)

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
    todo = sum(bool(c.todo) for c in plan)
    logger.debug(f"metric chunks: {len(plan) - todo} of {len(plan)} read from the cache ({len(by_file)} files), "
                 f"{todo} to compute")


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
