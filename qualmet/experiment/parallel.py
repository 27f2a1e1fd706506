"""Arms on a Dask cluster (``qualmet experiment SPEC --executor dask[:tcp://HOST:8786]``).

Every arm x seed is one task: :func:`arm_task` runs the same :func:`~qualmet.experiment.arms.run_arm`
as the serial loop, on a worker. The data of every seed (noise draw, out-of-fold predictions,
metrics) is prepared first, on the client, because it feeds every arm; then all arms are submitted
at once and come back as they finish.

Where results go: **workers write their arm's folder themselves** (model, evaluation, result.json,
written last and atomically), so the experiment folder must be on a file system every worker sees at
the same path (a local cluster always does; on a remote cluster, a shared mount). Shipping trained
models back to the client as data would move megabytes per arm for nothing; result.json is what
resume reads, and a rerun skips finished arms exactly as the serial run does. The client rewrites
results.csv and the summary after each arm, in the spec's seed x arm order, so they are the serial
run's whatever order the arms finish in.

GPU workers: when the detector's device is CUDA each task asks for one ``GPU`` resource (start
workers with ``dask worker --resources GPU=1``), so a GPU trains one arm at a time. A worker that
dies mid-arm has its task retried elsewhere (the arm resumes from its last checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ..errors import QualmetError
from .arms import run_arm
from .data import Replicate
from .spec import Spec


def arm_task(task: tuple[Spec, dict, int, Path, Replicate]) -> dict:
    """One arm for one seed, as a worker runs it (no progress bars)."""
    spec, arm, seed, out, rep = task
    return run_arm(spec, arm, seed, out, rep, progress=False)


def wants_gpu(spec: Spec) -> bool:
    return str(spec.raw["detector"].get("device", "cpu")).startswith("cuda")


def run_arms_on_dask(spec: Spec, out: Path, reps: dict[int, Replicate], address: str | None,
                     n_workers: int) -> Iterator[tuple[int, int, dict]]:
    """Submit every (seed, arm) and yield ``(seed, arm index, result)`` as each finishes."""
    from ..dask_executor import DaskExecutor

    tasks = [(spec, arm, seed, out, reps[seed]) for seed in spec.seeds for arm in spec.arms]
    ex = DaskExecutor(address, n_workers=n_workers, resources={"GPU": 1} if wants_gpu(spec) else None,
                     torch_threads=True)
    try:
        for task, res in ex.map_unordered(arm_task, tasks):
            _, arm, seed, _, _ = task
            if isinstance(res, BaseException):
                raise QualmetError(f"arm {arm['name']!r} seed {seed} failed on the cluster: "
                                   f"{type(res).__name__}: {res}") from res
            yield seed, spec.arms.index(arm), res
    except BaseException:
        ex.close(cancel=True)
        raise
    ex.close()


def in_spec_order(done: dict[tuple[int, int], Any], spec: Spec) -> list[Any]:
    """The finished results in the serial loop's order (seed, then arm), whatever order they came in."""
    return [done[(s, a)] for s in spec.seeds for a in range(len(spec.arms)) if (s, a) in done]
