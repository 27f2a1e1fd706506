"""object_proximity: gap from a box to the nearest other box in its frame, divided by the box's size.

Objects very close to each other confuse a detector and attract merged or swapped boxes (the
"Object Proximity" metric of the seed article). The gap is 0 for overlapping boxes; it is divided by
sqrt(box area) so it does not depend on image resolution. NaN when the box is alone or has no area
(a gap measured in zero box sizes would rank the worst box as the least suspicious). ``worse="low"``.
"""
import numpy as np
import pandas as pd

import qualmet
from qualmet.boxes import frame_pairs


@qualmet.metric(name="object_proximity", level="object", worse="low", vectorised=True,
                description="gap to the nearest other box in the frame / sqrt(box area); NaN if alone")
def object_proximity(annotations, images):
    i, a, b = frame_pairs(annotations)
    dx = np.maximum(0.0, np.maximum(a[:, 0], b[:, 0]) - np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]))
    dy = np.maximum(0.0, np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]))
    nearest = pd.Series(np.hypot(dx, dy)).groupby(i).min()
    gap = nearest.reindex(np.arange(len(annotations))).to_numpy()
    area = annotations["w"].to_numpy(dtype=np.float64) * annotations["h"].to_numpy(dtype=np.float64)
    size = np.sqrt(np.where(area > 0, area, np.nan))
    return gap / size
