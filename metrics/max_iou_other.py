"""max_iou_other: the largest IoU of a box with any other box in the same frame.

A value near 1 is almost always a duplicate label (the same object boxed twice); ``worse="high"``.
0 when the box is alone or overlaps nothing.
"""
import numpy as np
import pandas as pd

import qualmet
from qualmet.boxes import xywh_to_xyxy


@qualmet.metric(name="max_iou_other", level="object", worse="high", vectorised=True,
                description="largest IoU with another box in the frame (duplicates are ~1)")
def max_iou_other(annotations, images):
    a = annotations[["image_id", "x", "y", "w", "h"]].reset_index(drop=True)
    a["i"] = np.arange(len(a))
    p = a.merge(a, on="image_id", suffixes=("", "_o"))
    p = p[p["i"] != p["i_o"]]
    A = xywh_to_xyxy(p[["x", "y", "w", "h"]].to_numpy())
    B = xywh_to_xyxy(p[["x_o", "y_o", "w_o", "h_o"]].to_numpy())
    iw = np.clip(np.minimum(A[:, 2], B[:, 2]) - np.maximum(A[:, 0], B[:, 0]), 0, None)
    ih = np.clip(np.minimum(A[:, 3], B[:, 3]) - np.maximum(A[:, 1], B[:, 1]), 0, None)
    inter = iw * ih
    union = p["w"].to_numpy() * p["h"].to_numpy() + p["w_o"].to_numpy() * p["h_o"].to_numpy() - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    best = pd.Series(iou).groupby(p["i"].to_numpy()).max()
    return best.reindex(np.arange(len(a)), fill_value=0.0).to_numpy()
