"""confidence: how sure a detector is about a label.

The highest score of a predicted box of the same class with IoU >= 0.5 with the label, 0 if no
prediction matches (the seed article's "Object Confidence Score"). Low values flag boxes the model
does not see there: wrong class, wrong place, or a hard object. ``worse="low"``; needs predictions.
"""
import numpy as np
import pandas as pd

import qualmet
from qualmet.boxes import xywh_to_xyxy

IOU = 0.5


@qualmet.metric(name="confidence", level="object", needs={"predictions"}, worse="low", vectorised=True,
                description="best score of a same-class prediction with IoU >= 0.5 (0 if none)")
def confidence(annotations, images, predictions):
    a = annotations[["image_id", "category_id", "x", "y", "w", "h"]].reset_index(drop=True)
    a["i"] = np.arange(len(a))
    p = a.merge(predictions[["image_id", "category_id", "x", "y", "w", "h", "score"]], on=["image_id", "category_id"],
                suffixes=("", "_p"))
    A = xywh_to_xyxy(p[["x", "y", "w", "h"]].to_numpy())
    B = xywh_to_xyxy(p[["x_p", "y_p", "w_p", "h_p"]].to_numpy())
    iw = np.clip(np.minimum(A[:, 2], B[:, 2]) - np.maximum(A[:, 0], B[:, 0]), 0, None)
    ih = np.clip(np.minimum(A[:, 3], B[:, 3]) - np.maximum(A[:, 1], B[:, 1]), 0, None)
    inter = iw * ih
    union = p["w"].to_numpy() * p["h"].to_numpy() + p["w_p"].to_numpy() * p["h_p"].to_numpy() - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    score = np.where(iou >= IOU, p["score"].to_numpy(dtype=float), 0.0)
    best = pd.Series(score).groupby(p["i"].to_numpy()).max()
    return best.reindex(np.arange(len(a)), fill_value=0.0).to_numpy()
