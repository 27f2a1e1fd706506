"""box_tightness: does the box's shape match the shape of the object inside it? (reference definition)

The seed article's most useful metric: the aspect ratio of the dominant contour inside the box is
compared with the box's own aspect ratio. Inside the box, the grey crop is split by Otsu's threshold;
the side that covers less of the crop's border is the foreground; the largest external contour of
the foreground gives a bounding rectangle. Score = min(r_c / r_b, r_b / r_c) with r = width/height,
so 1 is a perfect match and a box padded or shifted unevenly scores lower. ``worse="low"``.
A box padded by the same factor on all sides keeps its aspect ratio and is not caught:
``box_tightness_iou`` covers that case. NaN for boxes under 4 px a side. Crops are sampled (every k-th pixel) to at most 128 px a side first (speed).
"""
import cv2
import numpy as np

import qualmet

MIN_SIDE = 4
MAX_SIDE = 128  # crops are shrunk to this longest side first: contours at this scale suffice, and it is fast


def foreground_mask(gray):
    """Otsu split of a grey crop; the class rarer on the crop border is the foreground (uint8 0/1)."""
    _, m = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
    return (1 - m) if border.mean() > 0.5 else m


@qualmet.metric(name="box_tightness", level="object", needs={"pixels"}, worse="low",
                description="aspect-ratio agreement (min/max) between the dominant contour inside the box and the box")
def box_tightness(ctx):
    out = ctx.nan_per_object()
    gray = ctx.gray
    for i in range(ctx.n_objects):
        x1, y1, x2, y2 = ctx.boxes_int[i]
        if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
            continue
        crop = ctx.crop(i, gray, max_side=MAX_SIDE)
        h, w = crop.shape[:2]
        contours, _ = cv2.findContours(foreground_mask(crop), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            out[i] = 0.0
            continue
        _, _, cw, ch = cv2.boundingRect(max(contours, key=cv2.contourArea))
        r_c, r_b = cw / ch, w / h
        out[i] = min(r_c / r_b, r_b / r_c)
    return out
