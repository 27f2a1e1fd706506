"""brightness: mean luma of the frame, 0 (black) to 1 (white).

Very dark (and very bright) frames hide objects and their box edges. ``worse="low"`` (dark
frames); over-exposed frames sit at the other end of the same scale.
"""
import cv2

import qualmet


@qualmet.metric(name="brightness", level="frame", needs={"pixels"}, worse="low",
                description="mean grey level / 255 (dark frames are low)")
def brightness(ctx):
    return cv2.mean(ctx.gray)[0] / 255.0
