"""Builders for metric tests: synthetic panda-like images drawn with cv2, tiny COCO data sets on disk."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from qualmet.context import MetricContext


def foliage(h: int = 200, w: int = 240, seed: int = 0) -> np.ndarray:
    """A green, textured RGB background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = rng.integers(20, 70, (h, w))
    img[..., 1] = rng.integers(90, 160, (h, w))
    img[..., 2] = rng.integers(20, 60, (h, w))
    return cv2.GaussianBlur(img, (3, 3), 0)


def draw_panda(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """A white ellipse with black ears, eye patches and legs filling the box (x, y, w, h)."""
    cx, cy = x + w // 2, y + h // 2
    cv2.ellipse(img, (cx, cy), (w // 2 - 1, h // 2 - 1), 0, 0, 360, (245, 245, 245), -1)
    for dx, dy in ((-w // 4, -h // 8), (w // 4, -h // 8), (-w // 3, h // 3), (w // 3, h // 3)):
        cv2.circle(img, (cx + dx, cy + dy), max(2, min(w, h) // 8), (15, 15, 15), -1)
    return img


def ctx_for(img: np.ndarray, boxes: list[list[float]], image_id: int = 1, cats: list[int] | None = None) -> MetricContext:
    anns = pd.DataFrame({"id": np.arange(1, len(boxes) + 1), "image_id": image_id,
                         "category_id": cats or [1] * len(boxes),
                         **{c: [float(b[i]) for b in boxes] for i, c in enumerate("xywh")}})
    return MetricContext(image_id, f"img{image_id}.png", img.shape[1], img.shape[0], anns, image=img)


def anns_df(rows: list[tuple]) -> pd.DataFrame:
    """rows: (id, image_id, category_id, x, y, w, h[, score])."""
    cols = ["id", "image_id", "category_id", "x", "y", "w", "h"] + (["score"] if rows and len(rows[0]) == 8 else [])
    return pd.DataFrame(rows, columns=cols).astype({c: float for c in ["x", "y", "w", "h"]})


def write_dataset(root: Path, n: int = 6, size: tuple[int, int] = (120, 96), extra_images: list[dict] | None = None,
                  extra_annotations: list[dict] | None = None) -> Path:
    """n frames on disk (PNG), one or two panda boxes each, plus a COCO JSON; returns the JSON path."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    images, anns, k = [], [], 0
    for i in range(1, n + 1):
        img = foliage(h, w, seed=i)
        boxes = [(10 + 3 * i, 12, 40, 30)] + ([(70, 50, 30, 28)] if i % 2 == 0 else [])
        for (x, y, bw, bh) in boxes:
            draw_panda(img, x, y, bw, bh)
            k += 1
            anns.append({"id": k, "image_id": i, "category_id": 1 + (k % 2), "bbox": [x, y, bw, bh], "area": bw * bh,
                         "iscrowd": 0})
        cv2.imwrite(str(img_dir / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"f{i}.png", "width": w, "height": h})
    images += extra_images or []
    anns += extra_annotations or []
    path = root / "data.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "panda"}, {"id": 2, "name": "bear"}]}))
    return path
