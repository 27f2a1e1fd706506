"""image_entropy: Shannon entropy of the grey-level histogram, in bits (0 to 8).

A low value means little information: blank, nearly uniform or heavily quantised frames.
``worse="low"``. The histogram is taken over a regular pixel grid (``ctx.small_gray``: every s-th
pixel, longest side <= 320 samples): a quarter of the pixels or fewer, and at most 0.04 bits from the
full-resolution histogram's value on the raccoon photos (0.01 on 640x480 synthetic frames).
"""
import cv2
import numpy as np

import qualmet


@qualmet.metric(name="image_entropy", level="frame", needs={"pixels"}, worse="low",
                description="entropy of the grey histogram in bits (uniform frames are low)")
def image_entropy(ctx):
    hist = cv2.calcHist([ctx.small_gray], [0], None, [256], [0, 256]).ravel()
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())
