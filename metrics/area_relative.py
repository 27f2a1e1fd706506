"""area_relative: box area as a share of the image area.

Tiny boxes are where label noise concentrates (a stray click, a box around a few pixels) and where
detectors struggle; ``worse="low"``.
"""
import numpy as np

import qualmet


@qualmet.metric(name="area_relative", level="object", worse="low", vectorised=True,
                description="box area / image area")
def area_relative(annotations, images):
    size = images.set_index("id")
    img_area = annotations["image_id"].map(size["width"] * size["height"]).to_numpy(dtype=float)
    return annotations["w"].to_numpy(dtype=float) * annotations["h"].to_numpy(dtype=float) / img_area
