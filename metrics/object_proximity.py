"""object_proximity: gap from a box to the nearest other box in its frame, divided by the box's size.

Objects very close to each other confuse a detector and attract merged or swapped boxes (the
"Object Proximity" metric of the seed article). The gap is 0 for overlapping boxes; it is divided by
sqrt(box area) so it does not depend on image resolution. NaN when the box is alone. ``worse="low"``.
"""
import numpy as np
import pandas as pd

import qualmet


@qualmet.metric(name="object_proximity", level="object", worse="low", vectorised=True,
                description="gap to the nearest other box in the frame / sqrt(box area); NaN if alone")
def object_proximity(annotations, images):
    a = annotations[["image_id", "x", "y", "w", "h"]].reset_index(drop=True)
    a["i"] = np.arange(len(a))
    pairs = a.merge(a, on="image_id", suffixes=("", "_o"))
    pairs = pairs[pairs["i"] != pairs["i_o"]]
    dx = np.maximum(0.0, np.maximum(pairs["x"], pairs["x_o"]) - np.minimum(pairs["x"] + pairs["w"], pairs["x_o"] + pairs["w_o"]))
    dy = np.maximum(0.0, np.maximum(pairs["y"], pairs["y_o"]) - np.minimum(pairs["y"] + pairs["h"], pairs["y_o"] + pairs["h_o"]))
    nearest = pd.Series(np.hypot(dx, dy).to_numpy()).groupby(pairs["i"].to_numpy()).min()
    gap = nearest.reindex(np.arange(len(a))).to_numpy()
    size = np.sqrt(np.maximum(a["w"].to_numpy() * a["h"].to_numpy(), 1e-12))
    return gap / size
