"""class_color_consistency: how far a box's colours are from those of its class.

A box whose colour histogram differs strongly from the average histogram of its class is often a
wrong class label, or a box on background. Two passes, because the class mean needs the whole data
set: per frame, each box's 4x4x4 RGB histogram (normalised) is computed from the decoded image and
kept with the chunk; after all chunks, ``finalize`` takes, for each box, the mean histogram of the
*other* boxes of its class (leave-one-out) and returns the Hellinger distance (0 same, 1 disjoint).
NaN for a class with a single box. ``worse="high"``.
"""
import cv2
import numpy as np

import qualmet

BINS = 4
BLOCK = 4096  # boxes per block in finalize


def _finalize(hists, annotations):
    cls = annotations["category_id"].to_numpy()
    out = np.full(len(hists), np.nan)
    ok = ~np.isnan(hists).any(axis=1)
    for c in np.unique(cls):
        idx = np.flatnonzero((cls == c) & ok)
        if len(idx) < 2:
            continue
        total = hists[idx].sum(axis=0)
        for s in range(0, len(idx), BLOCK):  # in blocks: memory stays flat however many boxes a class has
            b = idx[s:s + BLOCK]
            H = hists[b]
            loo = (total[None, :] - H) / (len(idx) - 1)
            bc = np.sqrt(H * loo).sum(axis=1)
            out[b] = np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))
    return out


@qualmet.metric(name="class_color_consistency", level="object", needs={"pixels"}, worse="high",
                finalize=_finalize,
                description="Hellinger distance between the box's colour histogram and its class's mean (leave-one-out)")
def class_color_consistency(ctx):
    out = np.full((ctx.n_objects, BINS ** 3), np.nan)
    for i in range(ctx.n_objects):
        crop = ctx.crop(i, max_side=64)  # every k-th pixel: a histogram needs no more
        if crop.size == 0:
            continue
        h = cv2.calcHist([crop], [0, 1, 2], None, [BINS] * 3, [0, 256] * 3).ravel()
        out[i] = h / max(h.sum(), 1.0)
    return out
