"""contrast: RMS contrast, the standard deviation of the grey levels / 255.

Flat, washed-out frames carry little edge information for a detector or a box. ``worse="low"``.
"""
import cv2

import qualmet


@qualmet.metric(name="contrast", level="frame", needs={"pixels"}, worse="low",
                description="standard deviation of grey levels / 255")
def contrast(ctx):
    return cv2.meanStdDev(ctx.gray)[1][0, 0] / 255.0
