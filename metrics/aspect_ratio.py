"""aspect_ratio: box width / height.

A descriptive label-only metric: boxes whose shape is far from their class's usual shape are often
truncated, merged or mistyped. ``worse="high"``: very wide boxes are the suspicious end here (look
at the low end with an explicit threshold when a class is naturally wide).
"""
import numpy as np

import qualmet


@qualmet.metric(name="aspect_ratio", level="object", worse="high", vectorised=True,
                description="box width / height (NaN for a zero-height box)")
def aspect_ratio(annotations, images):
    h = annotations["h"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h > 0, annotations["w"].to_numpy(dtype=float) / h, np.nan)
