"""Out-of-fold predictions: K models, each trained on K-1 folds, each predicting its held-out fold.

Every frame then has predictions from a model that never saw it, which is what label-error
metrics need. Fold models live in ``work_dir/fold_k``; a finished fold is not retrained, so an
interrupted cross-validation resumes where it stopped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..dataset import Dataset, empty_annotations
from ..errors import QualmetError


def fold_assignment(image_ids, folds: int, seed: int) -> dict[int, int]:
    """Image id -> fold number (0..folds-1), a seeded near-equal split by image."""
    ids = sorted(int(i) for i in image_ids)
    perm = np.random.default_rng([seed, 3]).permutation(len(ids))
    return {ids[k]: int(r % folds) for r, k in enumerate(perm)}


def crossval(dataset: str | os.PathLike | Dataset, folds: int = 5, out: str | os.PathLike | None = None,
             work_dir: str | os.PathLike | None = None, iters: int | None = None, seed: int = 0,
             device: str = "auto", recipe: str = "ssdlite256", images: str | os.PathLike | None = None,
             score_threshold: float = 0.001, progress: bool = True, **overrides: Any) -> pd.DataFrame:
    """Train ``folds`` models and return out-of-fold predictions (annotations-shaped, with ``score``
    and ``fold``); with ``out``, also write them as a COCO results JSON.

    Each fold model logs its val loss / mAP on its own held-out fold (no frames are taken away from
    its training data; the schedule is fixed, so nothing is tuned on them).
    """
    from .predictor import to_results
    from .train import _load_dataset, train

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
    parts = []
    for k in range(folds):
        held = [i for i, f in assign.items() if f == k]
        rest = [i for i, f in assign.items() if f != k]
        fold_dir = work / f"fold_{k}"
        preds_path = fold_dir / "preds.parquet"
        held_ds = ds.subset(held)
        if progress:
            print(f"fold {k + 1}/{folds}: training on {len(rest)} frames, predicting {len(held)}", flush=True)
        # train() returns at once for a finished fold and refuses a folder trained with other settings
        res = train(ds.subset(rest), fold_dir / "model", val_dataset=held_ds, iters=iters, seed=seed + k,
                    device=device, recipe=recipe, progress=progress, **overrides)
        if preds_path.is_file():
            parts.append(pd.read_parquet(preds_path))
            continue
        p = res.predictor.predict_dataset(held_ds, score_threshold=score_threshold)
        p["fold"] = k
        with atomic_path(preds_path) as tmp:
            p.to_parquet(tmp, index=False)
        parts.append(p)
    non_empty = [p for p in parts if len(p)]
    preds = pd.concat(non_empty, ignore_index=True) if non_empty else empty_annotations(with_score=True).assign(fold=0)
    preds["id"] = np.arange(1, len(preds) + 1)
    write_json(work / "folds.json", {"folds": folds, "seed": seed, "assignment": {str(i): f for i, f in assign.items()}},
               indent=1)
    if out is not None:
        write_json(out, to_results(preds))
    return preds
