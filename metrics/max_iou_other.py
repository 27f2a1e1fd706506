"""max_iou_other: the largest IoU of a box with any other box in the same frame.

A value near 1 is almost always a duplicate label (the same object boxed twice); ``worse="high"``.
0 when the box is alone or overlaps nothing.
"""
import numpy as np
import pandas as pd

import qualmet
from qualmet.boxes import frame_pairs, iou_pairs


@qualmet.metric(name="max_iou_other", level="object", worse="high", vectorised=True,
                description="largest IoU with another box in the frame (duplicates are ~1)")
def max_iou_other(annotations, images):
    i, a, b = frame_pairs(annotations)
    best = pd.Series(iou_pairs(a, b)).groupby(i).max()
    return best.reindex(np.arange(len(annotations)), fill_value=0.0).to_numpy()
