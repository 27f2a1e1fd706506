"""missed_by_labels: confident predictions that no label explains.

The number of predictions with score >= 0.5 whose IoU with every label of the frame (any class) is
below 0.5: objects the detector sees that the labeller may have missed. A class mismatch is not
counted here (``confidence`` catches it). ``worse="high"``; needs predictions.
"""
import numpy as np
import pandas as pd

import qualmet
from qualmet.boxes import xywh_to_xyxy

SCORE, IOU = 0.5, 0.5


@qualmet.metric(name="missed_by_labels", level="frame", needs={"predictions"}, worse="high", vectorised=True,
                description="predictions with score >= 0.5 matching no label at IoU >= 0.5")
def missed_by_labels(annotations, images, predictions):
    pr = predictions[predictions["score"] >= SCORE][["image_id", "x", "y", "w", "h"]].reset_index(drop=True)
    pr["j"] = np.arange(len(pr))
    m = pr.merge(annotations[["image_id", "x", "y", "w", "h"]], on="image_id", suffixes=("", "_a"))
    A = xywh_to_xyxy(m[["x", "y", "w", "h"]].to_numpy())
    B = xywh_to_xyxy(m[["x_a", "y_a", "w_a", "h_a"]].to_numpy())
    iw = np.clip(np.minimum(A[:, 2], B[:, 2]) - np.maximum(A[:, 0], B[:, 0]), 0, None)
    ih = np.clip(np.minimum(A[:, 3], B[:, 3]) - np.maximum(A[:, 1], B[:, 1]), 0, None)
    inter = iw * ih
    union = m["w"].to_numpy() * m["h"].to_numpy() + m["w_a"].to_numpy() * m["h_a"].to_numpy() - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    best = pd.Series(iou).groupby(m["j"].to_numpy()).max().reindex(np.arange(len(pr)), fill_value=0.0)
    missed = pr.loc[best.to_numpy() < IOU, "image_id"]
    return missed.value_counts().reindex(images["id"].to_numpy(), fill_value=0).astype(float)
