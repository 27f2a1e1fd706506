"""border_distance: distance from the box to the nearest image border, relative to the image's shorter side.

Boxes touching the border often hold truncated objects; a negative value means the box sticks out
of the image, which is a label error. ``worse="low"``.
"""
import numpy as np

import qualmet


@qualmet.metric(name="border_distance", level="object", worse="low", vectorised=True,
                description="min gap between box and image border / shorter image side (negative: box leaves the image)")
def border_distance(annotations, images):
    size = images.set_index("id")
    W = annotations["image_id"].map(size["width"]).to_numpy(dtype=float)
    H = annotations["image_id"].map(size["height"]).to_numpy(dtype=float)
    x, y = annotations["x"].to_numpy(dtype=float), annotations["y"].to_numpy(dtype=float)
    w, h = annotations["w"].to_numpy(dtype=float), annotations["h"].to_numpy(dtype=float)
    gap = np.minimum.reduce([x, y, W - (x + w), H - (y + h)])
    return gap / np.minimum(W, H)
