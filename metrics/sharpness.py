"""sharpness: variance of the Laplacian of the grey image.

The classic focus measure: blurred frames have weak second derivatives, so a low value flags motion
or focus blur, where box edges are ambiguous. ``worse="low"``.
"""
import cv2

import qualmet


@qualmet.metric(name="sharpness", level="frame", needs={"pixels"}, worse="low",
                description="variance of the Laplacian of the grey image (blurry frames are low)")
def sharpness(ctx):
    lap = cv2.Laplacian(ctx.gray, cv2.CV_16S, ksize=1)
    return float(cv2.meanStdDev(lap)[1][0, 0]) ** 2
