"""Tiny synthetic detection sets for the detector and evaluation tests.

Uses ``qualmet.synth.generate`` when it exists; otherwise draws bright and dark ellipses (two
classes) on grey noise, which the from-scratch detector learns in a few hundred iterations.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from qualmet.dataset import Dataset
from qualmet.formats import save_coco


def ellipses(out_dir: Path, n: int, size: int = 128, seed: int = 0, name: str = "train") -> Path:
    """Write ``n`` frames of ``size``x``size`` with 1-3 ellipses each; returns the COCO JSON path."""
    rng = np.random.default_rng(seed)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n + 1):
        img = rng.normal(128, 20, (size, size, 3)).clip(0, 255).astype(np.uint8)
        placed: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(20):
                w, h = rng.uniform(0.15, 0.4, 2) * size
                x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
                if all(x + w < px or px + pw < x or y + h < py or py + ph < y for px, py, pw, ph in placed):
                    break
            else:
                continue
            placed.append((x, y, w, h))
            cat = int(rng.integers(1, 3))
            color = (235, 235, 235) if cat == 1 else (20, 20, 20)
            cv2.ellipse(img, (int(round(x + w / 2)), int(round(y + h / 2))), (int(round(w / 2)), int(round(h / 2))),
                        0, 0, 360, color, -1)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h]})
        fn = f"{name}_{i:04d}.png"
        cv2.imwrite(str(img_dir / fn), img[:, :, ::-1])
        images.append({"id": i, "file_name": fn, "width": size, "height": size})
    ds = Dataset.from_records(images, anns, [{"id": 1, "name": "white"}, {"id": 2, "name": "black"}],
                              image_root=img_dir)
    path = out_dir / f"{name}.json"
    save_coco(ds, path)
    return path


def synth_set(out_dir: Path, n: int, size: int = 128, seed: int = 0) -> Path:
    """A training set of ``n`` frames: qualmet.synth when available, else :func:`ellipses`."""
    try:
        from qualmet.synth import generate  # written by another engineer; may not exist yet
    except ImportError:
        return ellipses(out_dir, n, size, seed)
    generate(out_dir, n_train=n, n_test=1, seed=seed, size=size)
    return out_dir / "train.json"
