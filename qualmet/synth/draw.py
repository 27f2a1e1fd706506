"""Drawing primitives: foliage textures, bamboo stalks, distractors, and pandas in three poses.

Every function draws with an explicit ``numpy.random.Generator`` so a frame is a pure function of
its seed. Pandas are drawn into a mask as well as the image, so boxes come from visible pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

WHITE = (236, 236, 230)
BLACK = (22, 22, 24)


def foliage(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A green, blotchy, leafy background (RGB uint8)."""
    base = np.array([70, 110, 50], np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    low = cv2.resize(rng.normal(0, 1, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = base + 22 * low + rng.normal(0, 9, (h, w, 3)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(4, 9)):  # colour blotches: light greens, browns
        c = rng.choice([(95, 140, 60), (60, 90, 40), (110, 95, 60), (130, 150, 80), (40, 70, 35)])
        col = tuple(int(v + rng.integers(-15, 15)) for v in c)
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 12, w // 4)), int(rng.integers(h // 12, h // 4)))
        cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    for _ in range(rng.integers(15, 40)):  # leaves
        col = tuple(int(v) for v in rng.integers([30, 80, 25], [80, 150, 60]))
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        L = int(rng.integers(max(3, w // 40), max(4, w // 14)))
        cv2.ellipse(img, center, (L, max(1, L // 3)), float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
    return img


def stalk(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
    """A bamboo stalk: a slightly slanted thick yellow-green line with darker nodes."""
    h, w = img.shape[:2]
    x = int(rng.integers(0, w))
    dx = int(rng.integers(-w // 8, w // 8))
    t = int(rng.integers(max(2, w // 60), max(3, w // 25)))
    col = tuple(int(v) for v in rng.integers([120, 150, 60], [170, 190, 100]))
    p1, p2 = (x, -5), (x + dx, h + 5)
    cv2.line(img, p1, p2, col, t, cv2.LINE_AA)
    if mask is not None:
        cv2.line(mask, p1, p2, 1, t)
    for yy in range(int(rng.integers(10, 40)), h, int(rng.integers(max(10, h // 6), max(11, h // 3)))):
        xx = int(x + dx * (yy + 5) / (h + 10))
        cv2.line(img, (xx - t, yy), (xx + t, yy), (90, 110, 40), max(1, t // 3), cv2.LINE_AA)


def distractor(img: np.ndarray, rng: np.random.Generator) -> None:
    """Something a panda detector may confuse: a grey/white rock, a black-and-white blob, a white patch."""
    h, w = img.shape[:2]
    kind = rng.integers(0, 3)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    r = int(rng.uniform(0.05, 0.15) * min(w, h))
    if kind == 0:  # rock: irregular grey polygon with a highlight
        ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
        rad = r * rng.uniform(0.7, 1.2, 9)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * 0.7 * np.sin(ang)], 1).astype(np.int32)
        g = int(rng.integers(120, 215))
        cv2.fillPoly(img, [pts], (g, g, g - 5), cv2.LINE_AA)
        cv2.ellipse(img, (cx - r // 4, cy - r // 4), (max(1, r // 3), max(1, r // 5)), 0, 0, 360,
                    (min(255, g + 30),) * 3, -1, cv2.LINE_AA)
    elif kind == 1:  # black-and-white blob striped like a cow or a zebra: not a panda's layout (no "eyes")
        axes, ang = (r, int(r * rng.uniform(0.5, 1.0))), float(rng.uniform(0, 180))
        blob = np.zeros((h, w), np.uint8)
        cv2.ellipse(blob, (cx, cy), axes, ang, 0, 360, 255, -1, cv2.LINE_AA)
        stripes = np.zeros((h, w), np.uint8)
        for k in range(rng.integers(2, 6)):  # the same draws as round spots would take, drawn as long bands
            sx, sy = cx + int(rng.integers(-r // 2, r // 2 + 1)), cy + int(rng.integers(-r // 3, r // 3 + 1))
            t = max(1, int(r * rng.uniform(0.1, 0.3)))
            cv2.ellipse(stripes, (sx, sy), (int(1.6 * r), max(1, t // 2 + 1)), ang + 90 + 25 * (k % 3 - 1), 0, 360,
                        255, -1, cv2.LINE_AA)
        a = (blob.astype(np.float32) / 255)[..., None]
        sb = (stripes.astype(np.float32) / 255)[..., None]
        colour = np.array(WHITE, np.float32) * (1 - sb) + np.array(BLACK, np.float32) * sb
        img[:] = np.clip(img * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)
    else:  # white patch (a flower bed, snow, a plastic bag)
        cv2.ellipse(img, (cx, cy), (r, max(1, r // 2)), float(rng.uniform(0, 180)), 0, 360,
                    tuple(int(v) for v in rng.integers(215, 250, 3)), -1, cv2.LINE_AA)


def _e(layer, mask, c, axes, ang, col):
    c = (int(c[0]), int(c[1]))
    axes = (max(1, int(axes[0])), max(1, int(axes[1])))
    cv2.ellipse(layer, c, axes, float(ang), 0, 360, col, -1, cv2.LINE_AA)
    cv2.ellipse(mask, c, axes, float(ang), 0, 360, 1, -1)


def panda(shape: tuple[int, int], rng: np.random.Generator, cx: float, cy: float, s: float, pose: str,
          facing: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one panda of height ~``s`` px centred at (cx, cy) on an empty layer: (RGB layer, 0/1 mask)."""
    h, w = shape
    layer = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    u = s / 10.0  # one unit: a tenth of the panda's height
    f = facing
    if pose == "side":
        # quadruped: wide body with a black shoulder band, head at the front, four black legs
        by = cy + 0.5 * u
        for lx in (-3.2, -1.8, 1.8, 3.2):
            _e(layer, mask, (cx + lx * u, by + 2.6 * u), (0.8 * u, 1.8 * u), 0, BLACK)
        _e(layer, mask, (cx, by), (4.4 * u, 2.6 * u), 0, WHITE)
        _e(layer, mask, (cx + f * 1.6 * u, by), (1.2 * u, 2.5 * u), 0, BLACK)
        hx, hy = cx + f * 4.6 * u, by - 1.6 * u
        _e(layer, mask, (hx - f * 0.6 * u, hy - 1.5 * u), (0.8 * u, 0.8 * u), 0, BLACK)
        _e(layer, mask, (hx, hy), (2.0 * u, 1.8 * u), 0, WHITE)
        _e(layer, mask, (hx + f * 0.7 * u, hy - 0.2 * u), (0.6 * u, 0.4 * u), 30 * f, BLACK)
        _e(layer, mask, (hx + f * 1.9 * u, hy + 0.4 * u), (0.3 * u, 0.25 * u), 0, BLACK)
    else:
        sitting = pose == "sitting"
        body_ax = (3.2 * u, 3.4 * u) if sitting else (2.8 * u, 3.2 * u)
        by = cy + (1.6 if sitting else 1.4) * u
        if not sitting:  # standing front: legs below the body
            for lx in (-1.6, 1.6):
                _e(layer, mask, (cx + lx * u, by + 3.0 * u), (0.9 * u, 1.4 * u), 0, BLACK)
        _e(layer, mask, (cx, by), body_ax, 0, WHITE)
        for sgn in (-1, 1):  # arms, and for sitting pose the feet in front
            _e(layer, mask, (cx + sgn * 2.4 * u, by - 0.4 * u), (0.9 * u, 2.0 * u), -sgn * 20, BLACK)
            if sitting:
                _e(layer, mask, (cx + sgn * 1.7 * u, by + 2.8 * u), (1.1 * u, 0.8 * u), 0, BLACK)
        hy = cy - 2.6 * u
        for sgn in (-1, 1):
            _e(layer, mask, (cx + sgn * 1.5 * u, hy - 1.5 * u), (0.75 * u, 0.75 * u), 0, BLACK)
        _e(layer, mask, (cx, hy), (2.2 * u, 1.9 * u), 0, WHITE)
        for sgn in (-1, 1):
            _e(layer, mask, (cx + sgn * 0.8 * u, hy - 0.1 * u), (0.55 * u, 0.4 * u), sgn * 60, BLACK)
        _e(layer, mask, (cx, hy + 0.8 * u), (0.35 * u, 0.25 * u), 0, BLACK)
    # fur texture: a little noise on the panda only
    noise = rng.normal(0, 6, (h, w, 1)).astype(np.int16)
    layer = np.where(mask[..., None] > 0, np.clip(layer.astype(np.int16) + noise, 0, 255), 0).astype(np.uint8)
    return layer, mask
