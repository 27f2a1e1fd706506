"""Out-of-fold predictions: K models, each trained on K-1 folds, each predicting its held-out fold.

Every frame then has predictions from a model that never saw it, which is what label-error
metrics need. Fold models live in ``work_dir/fold_k``; a finished fold is not retrained, so an
interrupted cross-validation resumes where it stopped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..dataset import Dataset, empty_annotations
from ..errors import QualmetError
from ..log import logger


def fold_assignment(image_ids, folds: int, seed: int) -> dict[int, int]:
    """Image id -> fold number (0..folds-1), a seeded near-equal split by image."""
    ids = sorted(int(i) for i in image_ids)
    perm = np.random.default_rng([seed, 3]).permutation(len(ids))
    return {ids[k]: int(r % folds) for r, k in enumerate(perm)}


def crossval(dataset: str | os.PathLike | Dataset, folds: int = 5, out: str | os.PathLike | None = None,
             work_dir: str | os.PathLike | None = None, iters: int | None = None, seed: int = 0,
             device: str = "auto", recipe: str = "ssdlite256", images: str | os.PathLike | None = None,
             score_threshold: float = 0.001, progress: bool = False, executor: str | None = None,
             workers: int = 2, **overrides: Any) -> pd.DataFrame:
    """Train ``folds`` models and return out-of-fold predictions (annotations-shaped, with ``score``
    and ``fold``); with ``out``, also write them as a COCO results JSON.

    Each fold model logs its val loss / mAP on its own held-out fold (no frames are taken away from
    its training data; the schedule is fixed, so nothing is tuned on them). ``executor`` ``"dask"``
    (a local cluster of ``workers`` processes) or ``"dask:tcp://HOST:PORT"`` trains the folds as
    tasks on a Dask cluster, which must see ``work_dir`` at the same path (the workers write the fold
    folders); fold k trains with seed ``seed + k`` either way, so the predictions are the same.
    """
    from .predictor import to_results
    from .train import _load_dataset

    ds = _load_dataset(dataset, images)
    if folds < 2:
        raise QualmetError(f"--folds must be at least 2, got {folds}")
    if len(ds.images) < folds:
        raise QualmetError(f"{ds.source}: {len(ds.images)} frame(s) cannot be split into {folds} folds")
    if work_dir is None:
        if out is None:
            raise QualmetError("crossval needs out= or work_dir= for its fold models")
        work_dir = Path(out).with_name(Path(out).stem + "_folds")
    work = Path(work_dir)
    assign = fold_assignment(ds.images["id"], folds, seed)
    train_kw = {"iters": iters, "device": device, "recipe": recipe, **overrides}
    tasks = [FoldTask(ds, k, [i for i, f in assign.items() if f == k], work / f"fold_{k}", seed + k, score_threshold,
                      train_kw) for k in range(folds)]
    parts = _run_folds(tasks, progress, executor, workers, str(device).startswith("cuda"))
    non_empty = [p for p in parts if len(p)]
    preds = pd.concat(non_empty, ignore_index=True) if non_empty else empty_annotations(with_score=True).assign(fold=0)
    preds["id"] = np.arange(1, len(preds) + 1)
    write_json(work / "folds.json", {"folds": folds, "seed": seed, "assignment": {str(i): f for i, f in assign.items()}},
               indent=1)
    if out is not None:
        write_json(out, to_results(preds))
    return preds


@dataclass
class FoldTask:
    """One fold: train on every frame but ``held``, predict ``held``; plain data, so a Dask worker
    can run it."""

    ds: Dataset
    k: int
    held: list[int]
    fold_dir: Path
    seed: int
    score_threshold: float
    train_kw: dict[str, Any]


def run_fold(t: FoldTask, progress: bool = False) -> pd.DataFrame:
    """The fold's predictions (read back when ``fold_dir/preds.parquet`` exists). train() returns at
    once for a finished fold model and refuses a folder trained with other settings."""
    from .train import train

    held = set(t.held)
    held_ds = t.ds.subset(t.held)
    rest = [int(i) for i in t.ds.images["id"] if int(i) not in held]
    res = train(t.ds.subset(rest), t.fold_dir / "model", val_dataset=held_ds, seed=t.seed, progress=progress,
                **t.train_kw)
    preds_path = t.fold_dir / "preds.parquet"
    if preds_path.is_file():
        return pd.read_parquet(preds_path)
    p = res.predictor.predict_dataset(held_ds, score_threshold=t.score_threshold)
    p["fold"] = t.k
    with atomic_path(preds_path) as tmp:
        p.to_parquet(tmp, index=False)
    return p


def _run_folds(tasks: list[FoldTask], progress: bool, executor: str | None, workers: int,
               gpu: bool) -> list[pd.DataFrame]:
    """Each fold's predictions, in fold order: here one after another, or as tasks on Dask."""
    def says(t: FoldTask) -> str:
        return f"fold {t.k + 1}/{len(tasks)}: training on {len(t.ds.images) - len(t.held)} frames, predicting {len(t.held)}"

    if executor is None or executor == "local":
        parts = []
        for t in tasks:
            logger.info(says(t))
            parts.append(run_fold(t, progress))
        return parts
    from ..dask_executor import DaskExecutor, parse_executor

    _, address = parse_executor(executor)
    ex = DaskExecutor(address, n_workers=workers, resources={"GPU": 1} if gpu else None, torch_threads=True)
    for t in tasks:
        logger.info(says(t) + " (on Dask)")
    got: dict[int, pd.DataFrame] = {}
    try:
        for t, res in ex.map_unordered(run_fold, tasks):
            if isinstance(res, BaseException):
                raise QualmetError(f"fold {t.k} failed on the cluster: {type(res).__name__}: {res}") from res
            logger.info(f"fold {t.k + 1}/{len(tasks)}: done, {len(res)} predictions on {len(t.held)} frames")
            got[t.k] = res
    except BaseException:
        ex.close(cancel=True)
        raise
    ex.close()
    return [got[t.k] for t in tasks]
