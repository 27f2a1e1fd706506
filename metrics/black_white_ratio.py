"""black_white_ratio: share of the box's pixels that are near-black or near-white.

The seed article's panda observation: a panda is black and white, so a box that holds mostly other
colours (shifted off the animal, loose around foliage, or around something else) scores low. A pixel
counts when it is dark (V < 64) or white-ish (S < 48 and V > 176) in HSV. ``worse="low"``.
The share is estimated on a regular pixel grid (``ctx.small_stride``: every s-th pixel, longest side
<= 320 samples); boxes with fewer than 64 grid samples count every pixel instead.
"""
import cv2
import numpy as np

import qualmet

DARK_V, WHITE_S, WHITE_V = 64, 48, 176
MIN_SAMPLES = 64
MAX_CROPS = 16  # more boxes than this: one whole-frame mask beats converting crop by crop


def _bw_mask(hsv):
    """255 where a pixel is near-black or near-white, else 0."""
    return cv2.bitwise_or(cv2.inRange(hsv, (0, 0, 0), (255, 255, DARK_V - 1)),
                          cv2.inRange(hsv, (0, 0, WHITE_V + 1), (255, WHITE_S - 1, 255)))


@qualmet.metric(name="black_white_ratio", level="object", needs={"pixels"}, worse="low",
                description="share of box pixels that are near-black or near-white")
def black_white_ratio(ctx):
    b = ctx.small_boxes_int  # box corners on the sample grid
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)  # grid samples per box
    out = np.full(len(b), np.nan)
    s = ctx.small_stride
    rows, cols = ctx.small_shape
    if area.sum() * 3 > rows * cols or len(b) > MAX_CROPS:
        # boxes cover much of the frame, or there are many: one mask, per-box sums in O(1)
        integ = cv2.integral(_bw_mask(ctx.small_hsv))
        count = (integ[y2, x2] - integ[y1, x2] - integ[y2, x1] + integ[y1, x1]) / 255.0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(area > 0, count / area, np.nan)
    else:
        # few, small boxes: only their grid samples are converted; the same pixels as the whole-frame
        # path (grid sample (r, c) is image pixel (r * s, c * s)), so the same values
        for i in np.flatnonzero(area >= MIN_SAMPLES):
            crop = ctx.grid(x1[i] * s, y1[i] * s, x2[i] * s, y2[i] * s, s)
            out[i] = cv2.countNonZero(_bw_mask(cv2.cvtColor(crop, cv2.COLOR_RGB2HSV))) / area[i]
    for i in np.flatnonzero(area < MIN_SAMPLES):  # tiny boxes: count every pixel instead
        crop = ctx.crop(i)
        if crop.size:
            out[i] = cv2.countNonZero(_bw_mask(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2HSV))) / (crop.size // 3)
    return out
