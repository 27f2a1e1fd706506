"""colorfulness: Hasler and Suesstrunk's colourfulness of the frame.

sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2) with rg = R - G and
yb = (R + G) / 2 - B. Near-grey frames (greyscale images, fog, night) are low. ``worse="low"``.
"""
import math

import cv2
import numpy as np

import qualmet

_OPPONENT = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], np.float32)  # RGB -> (rg, yb)


@qualmet.metric(name="colorfulness", level="frame", needs={"pixels"}, worse="low",
                description="Hasler-Suesstrunk colourfulness (grey frames are low)")
def colorfulness(ctx):
    rgb = ctx.small.astype(np.float32)  # a regular pixel sample: same statistics, cheaper
    opp = cv2.transform(rgb, _OPPONENT)  # channels rg, yb
    mean, std = cv2.meanStdDev(opp)
    return math.hypot(std[0, 0], std[1, 0]) + 0.3 * math.hypot(mean[0, 0], mean[1, 0])
