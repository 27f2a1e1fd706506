"""image_entropy: Shannon entropy of the grey-level histogram, in bits (0 to 8).

A low value means little information: blank, nearly uniform or heavily quantised frames.
``worse="low"``.
"""
import cv2
import numpy as np

import qualmet


@qualmet.metric(name="image_entropy", level="frame", needs={"pixels"}, worse="low",
                description="entropy of the grey histogram in bits (uniform frames are low)")
def image_entropy(ctx):
    hist = cv2.calcHist([ctx.gray], [0], None, [256], [0, 256]).ravel()
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())
