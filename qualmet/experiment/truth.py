"""What the clean labels say about noisy ones, for the arms that may read the truth (anchors,
learned arms' verified frames, the known-wrong count of every arm): a noisy box is right when the clean
labels hold the same box (same annotation id, class and coordinates to 1e-6 px), wrong otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..dataset import BOX_COLUMNS, Dataset


def same_box(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """For each row of ``a``: is there a box in ``b`` with the same id, class and coordinates?"""
    m = a[["id", "category_id"] + BOX_COLUMNS].merge(b[["id", "category_id"] + BOX_COLUMNS], on="id", how="left",
                                                     suffixes=("", "_b"))
    same = m["category_id"] == m["category_id_b"]
    for c in BOX_COLUMNS:
        same &= np.isclose(m[c].to_numpy(float), m[f"{c}_b"].to_numpy(float), rtol=0, atol=1e-6)
    return same.fillna(False).to_numpy(bool)


def oracle_remove(noisy: Dataset, clean: Dataset) -> Dataset:
    """``noisy`` without the boxes that differ from ``clean``, plus each clean box left without its
    label as an ``iscrowd=1`` ignore region (same frames in both)."""
    na, ca = noisy.annotations, clean.annotations
    kept = na[same_box(na, ca)]
    lost = ca[~same_box(ca, kept)].copy()
    lost["iscrowd"] = 1
    out = noisy.copy()
    out.annotations = pd.concat([kept, lost], ignore_index=True).sort_values("id", kind="stable").reset_index(drop=True)
    return out


def wrong_boxes(noisy: Dataset, clean: Dataset, image_ids) -> pd.Series:
    """annotation id -> True where the noisy box (ignore regions left out) on ``image_ids`` is not a
    clean box: moved, resized, relabelled or spurious."""
    ids = list(image_ids)
    boxes = noisy.annotations[noisy.annotations["image_id"].isin(ids) & (noisy.annotations["iscrowd"] == 0)]
    clean_boxes = clean.annotations[clean.annotations["image_id"].isin(ids)]
    return pd.Series(~same_box(boxes, clean_boxes), index=boxes["id"].astype(int).to_numpy())
