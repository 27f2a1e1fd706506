"""Computing a metric run's chunks on an executor: what the run has gathered so far, and the loop
that hands chunk tasks to the executor, caches each finished chunk at once, and reruns a chunk
frame by frame when its worker process died."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import pandas as pd

from .chunks import ChunkPlan, cache_key, write_chunk
from .compute import ChunkResult, ChunkTask, compute_chunk, error_record, split_task
from .executors import Executor, is_killed_worker, is_worker_death
from .log import bar as progress_bar
from .log import logger
from .metric_tables import Tables


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


def _compute(ex: Executor, tasks: Iterable[ChunkTask], n_frames: int, plan: list[_Chunk], chunk_dir: Path | None,
             got: _Gathered, progress: bool) -> None:
    """Run ``tasks`` on ``ex`` with a progress bar over their ``n_frames`` frames; the executor is
    closed at the end, and cancelled if the run is interrupted."""
    logger.debug(f"computing metrics on {n_frames} frames with {type(ex).__name__}")
    bar = progress_bar(total=n_frames, unit="frame", desc="metrics", enabled=progress)
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
