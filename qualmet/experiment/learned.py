"""Learned arms: a logistic combiner of several metrics, fitted on a small verified set charged to
the budget (issue 21, item 6).

An arm with ``verified = V`` and ``learn_from = [metrics]`` spends V of its budget's frames on
verification: V frames drawn from the pool (seeded by the arm's seed) whose boxes the noise manifest
reveals as right or wrong, exactly what a person checking them would find. On those boxes
:class:`~qualmet.combine.LearnedCombiner` fits ``P(wrong | x)`` over the ``learn_from`` metrics'
standardised suspicions (NaN imputed, with an indicator); every box of the pool then gets that
probability as the object metric ``learned`` (higher = more likely wrong). The arm's strategy
(``metric = "learned"``: a filter, rank, stratify, remove_annotations or ignore_annotations) selects the other
``budget - V`` frames from the rest of the pool, and the V verified frames join the training set
with their clean labels, so the arm trains on as many frames as random.

Common random numbers hold only approximately: the selection walks the permutation of the pool less
the verified frames, not random's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..combine import verified_frames, with_learned
from ..dataset import Dataset
from ..errors import QualmetError
from ..metric_run import MetricRun
from .truth import wrong_boxes

LEARNED = "learned"  # the metric name a learned arm ranks by


@dataclass
class Verified:
    """The verified frames of one learned arm and what fitting on them found."""

    image_ids: list[int]
    n_boxes: int
    n_wrong: int
    weights: dict[str, float]  # per learn_from metric, on its standardised suspicion


def learned_run(run: MetricRun, noisy: Dataset, clean: Dataset, arm: dict, seed: int) -> tuple[MetricRun, Verified]:
    """``run`` with the object metric ``learned`` (P(wrong) from a combiner fitted on the arm's
    verified frames), and those frames."""
    metrics = list(arm.get("learn_from") or [])
    ids = verified_frames(noisy.images["id"], int(arm["verified"]), seed)
    wrong = wrong_boxes(noisy, clean, ids)
    if wrong.nunique() < 2:
        raise QualmetError(f"arm {arm.get('name')!r} seed {seed}: its {len(ids)} verified frames hold "
                           f"{len(wrong)} boxes, {'all wrong' if wrong.all() else 'none wrong'}: raise 'verified'")
    out, model = with_learned(run, wrong, metrics, LEARNED)
    weights = {m: float(w) for m, w in zip(model.metrics, model.weights)}
    return out, Verified(ids, len(wrong), int(wrong.sum()), weights)


def with_verified(subset: Dataset, clean: Dataset, verified: Verified) -> Dataset:
    """``subset`` plus the verified frames with their clean labels. Clean boxes keep their ids (the
    noise injector numbers the boxes it adds past the clean ones, so they do not collide); an id
    ``subset`` already uses is renumbered past its largest."""
    add = clean.subset(verified.image_ids)
    anns = add.annotations.copy()
    taken = anns["id"].isin(subset.annotations["id"])
    if taken.any():
        first = int(max(subset.annotations["id"].max(), anns["id"].max())) + 1
        anns.loc[taken, "id"] = np.arange(first, first + int(taken.sum()), dtype="int64")
    out = subset.copy()
    out.images = pd.concat([subset.images, add.images], ignore_index=True)
    out.annotations = pd.concat([subset.annotations, anns], ignore_index=True)
    return out.normalised()
