"""box_tightness_iou: IoU between the box and the object found around it.

The box is enlarged by 20 % per side (clipped to the image) and the foreground is segmented in that
crop; the bounding rectangle of the largest foreground component is compared with the box by IoU.
Loose boxes (too much background), shifted boxes (part of the object outside) and boxes on nothing
all score lower; 1 is a box that hugs its object. ``worse="low"``.

Segmentation (``METHOD``): "border" (default) takes the median YCrCb colour of the enlarged crop's
outer ring as the background and thresholds each pixel's mean absolute YCrCb difference from it with Otsu; "otsu"
thresholds the grey crop with Otsu and keeps the side rarer on the ring. On textured, coloured
backgrounds such as foliage the colour distance separates objects better than grey levels, and it
needs no iterations (GrabCut was ~50x slower per box); the AUROC figures in docs/metrics.md compare
the two. NaN for boxes under 4 px a side. Crops are sampled (every k-th pixel) to at most 96 px a side first, for speed.
"""
import cv2
import numpy as np

import qualmet

MARGIN = 0.2
MIN_SIDE = 4
METHOD = "border"
MAX_SIDE = 96  # the enlarged crop is sampled down to about this longest side before segmenting (speed)


def colour_distance_table(med):
    """(256, 1, 3) uint8 lookup table: |v - med[c]| rounded half to even, per channel c.

    The median of the ring can end in .5. OpenCV's absdiff with such a scalar changed between
    releases (5.0 rounds the scalar first, 5.1 rounds the difference), which moved this metric's
    values with the installed OpenCV; a table computed here gives 5.1's values on every release."""
    return np.rint(np.abs(_LEVELS - np.asarray(med, np.float64)[None, None, :])).astype(np.uint8)


_LEVELS = np.arange(256, dtype=np.float64)[:, None, None]


def _segment(rgb, method):
    if method == "otsu":
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        _, m = cv2.threshold(g, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        ring = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
        return (1 - m) if ring.mean() > 0.5 else m
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)  # linear and fast; Lab was ~10x slower here
    ring = np.sort(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]), axis=0)
    n = len(ring)  # the median per channel (np.median's value; a plain sort is cheaper on ~400 bytes)
    med = (ring[(n - 1) // 2].astype(np.float64) + ring[n // 2]) / 2
    diff = cv2.LUT(lab, colour_distance_table(med))
    dist = cv2.transform(diff, np.full((1, 3), 1 / 3, np.float32))  # mean absolute YCrCb difference, uint8
    _, m = cv2.threshold(dist, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return m


def tightness_iou(ctx, method=METHOD):
    """Per box IoU with the segmented object's rectangle (exposed for comparing methods)."""
    out = ctx.nan_per_object()
    img = ctx.image
    H, W = img.shape[:2]
    kernel = np.ones((3, 3), np.uint8)
    for i, (x, y, w, h) in enumerate(ctx.boxes):
        if w < MIN_SIDE or h < MIN_SIDE:
            continue
        X1, Y1 = int(max(0, np.floor(x - MARGIN * w))), int(max(0, np.floor(y - MARGIN * h)))
        X2, Y2 = int(min(W, np.ceil(x + w + MARGIN * w))), int(min(H, np.ceil(y + h + MARGIN * h)))
        if X2 - X1 < MIN_SIDE or Y2 - Y1 < MIN_SIDE:
            continue
        cw, ch = X2 - X1, Y2 - Y1
        k = max(1, -(-max(cw, ch) // MAX_SIDE))
        crop = ctx.grid(X1, Y1, X2, Y2, k)  # every k-th pixel: enough for a rectangle
        fx, fy = cw / crop.shape[1], ch / crop.shape[0]
        m = cv2.morphologyEx(_segment(crop, method), cv2.MORPH_OPEN, kernel)
        n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n <= 1:
            out[i] = 0.0
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        sx, sy, sw, sh = (float(stats[k, c]) for c in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        sx, sw, sy, sh = sx * fx, sw * fx, sy * fy, sh * fy
        bx, by = x - X1, y - Y1
        iw = max(0.0, min(bx + w, sx + sw) - max(bx, sx))
        ih = max(0.0, min(by + h, sy + sh) - max(by, sy))
        inter = iw * ih
        out[i] = inter / (w * h + sw * sh - inter)
    return out


@qualmet.metric(name="box_tightness_iou", level="object", needs={"pixels"}, worse="low",
                description="IoU between the box and the foreground segmented in a 20%-enlarged crop")
def box_tightness_iou(ctx):
    return tightness_iou(ctx)
