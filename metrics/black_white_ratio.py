"""black_white_ratio: share of the box's pixels that are near-black or near-white.

The seed article's panda observation: a panda is black and white, so a box that holds mostly other
colours (shifted off the animal, loose around foliage, or around something else) scores low. A pixel
counts when it is dark (V < 64) or white-ish (S < 48 and V > 176) in HSV. ``worse="low"``.
"""
import cv2
import numpy as np

import qualmet

DARK_V, WHITE_S, WHITE_V = 64, 48, 176
MIN_SAMPLES = 64


@qualmet.metric(name="black_white_ratio", level="object", needs={"pixels"}, worse="low",
                description="share of box pixels that are near-black or near-white")
def black_white_ratio(ctx):
    hsv = ctx.small_hsv  # a regular pixel sample (longest side <= 320): the share is estimated, cheaply
    dark = cv2.inRange(hsv, (0, 0, 0), (255, 255, DARK_V - 1))
    white = cv2.inRange(hsv, (0, 0, WHITE_V + 1), (255, WHITE_S - 1, 255))
    bw = cv2.bitwise_or(dark, white)  # 0 or 255
    integ = cv2.integral(bw)  # per-box sums in O(1) however many boxes there are
    b = ctx.small_boxes_int
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    count = (integ[y2, x2] - integ[y1, x2] - integ[y2, x1] + integ[y1, x1]) / 255.0
    area = (x2 - x1) * (y2 - y1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(area > 0, count / area, np.nan)
    for i in np.flatnonzero(area < MIN_SAMPLES):  # tiny boxes: count every pixel instead
        crop = ctx.crop(i, ctx.hsv)
        if crop.size:
            out[i] = (cv2.inRange(crop, (0, 0, 0), (255, 255, DARK_V - 1)) |
                      cv2.inRange(crop, (0, 0, WHITE_V + 1), (255, WHITE_S - 1, 255))).mean() / 255.0
    return out
