"""One synthetic frame: foliage, distractors, 0-5 pandas (later ones occlude earlier ones), and
stalks in front; each panda's box is the tight box of its visible pixels."""
from __future__ import annotations

import numpy as np

from . import draw

POSES = ("front", "side", "sitting")
MIN_VISIBLE_FRACTION = 0.3  # a panda less visible than this is not drawn (and so not labelled)
MIN_VISIBLE_PIXELS = 40


MIN_SIDE = 32  # smaller frames cannot hold a visible panda
MAX_SIDE = 8192  # a frame is drawn in memory several times over; larger ones would exhaust it


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    w, h = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        from ..errors import QualmetError

        raise QualmetError(f"synthetic frame size {w}x{h}: each side must be {MIN_SIDE} to {MAX_SIDE} px")
    return w, h


def render_frame(seed: int, index: int, size: int | tuple[int, int] = 256
                 ) -> tuple[np.ndarray, list[np.ndarray], list[tuple[int, int, int, int]]]:
    """Render frame ``index`` of data set ``seed``: (RGB image, visible mask per panda, xywh box per panda).

    A pure function of (seed, index, size), so frames render in any order, in parallel.
    """
    w, h = _size(size)
    rng = np.random.default_rng([int(seed), int(index)])
    img = draw.foliage(rng, w, h)
    for _ in range(rng.integers(1, 4)):  # stalks behind everything
        draw.stalk(img, rng)
    for _ in range(rng.integers(0, 4)):
        draw.distractor(img, rng)
    n = int(rng.choice(6, p=[0.08, 0.32, 0.25, 0.17, 0.1, 0.08]))
    layers = []
    for _ in range(n):
        s = rng.uniform(0.08, 0.55) * min(w, h)  # panda height; boxes span ~6%-60% of the frame side
        cx = rng.uniform(-0.05, 1.05) * w        # some pandas stand at the border
        cy = rng.uniform(0.1, 0.95) * h
        pose = POSES[int(rng.integers(0, 3))]
        layers.append(draw.panda((h, w), rng, cx, cy, s, pose, int(rng.choice([-1, 1]))))
    front = np.zeros((h, w), np.uint8)
    front_img = img.copy()
    for _ in range(rng.integers(0, 3)):  # stalks in front of the pandas occlude them
        draw.stalk(front_img, rng, front)
    # visibility: a panda is hidden by the pandas drawn after it and by the front stalks
    occl = front.astype(bool)
    visible = [None] * n
    for i in range(n - 1, -1, -1):
        m = layers[i][1].astype(bool)
        visible[i] = m & ~occl
        occl |= m
    keep = [i for i in range(n) if visible[i].sum() >= MIN_VISIBLE_PIXELS
            and visible[i].sum() >= MIN_VISIBLE_FRACTION * max(1, layers[i][1].sum())]
    if len(keep) < n:  # recompute visibility among the pandas actually drawn
        layers = [layers[i] for i in keep]
        occl = front.astype(bool)
        visible = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            m = layers[i][1].astype(bool)
            visible[i] = m & ~occl
            occl |= m
    for layer, m in layers:
        mb = m.astype(bool)
        img[mb] = layer[mb]
    f = front.astype(bool)
    img[f] = front_img[f]
    boxes, masks = [], []
    for v in visible:
        if not v.any():
            continue
        ys, xs = np.nonzero(v)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
        masks.append(v)
    return img, masks, boxes
