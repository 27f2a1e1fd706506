"""Shared fixtures: the raccoon data set shipped beside the repository, small COCO builders."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RACCOON = SHARED / "datasets" / "raccoon"


@pytest.fixture(scope="session")
def raccoon_dir() -> Path:
    if not RACCOON.is_dir():
        pytest.fail(f"the raccoon data set is expected at {RACCOON} (../shared beside the repository)")
    return RACCOON


def make_coco(n_images: int = 3, boxes_per_image: int = 2, size: tuple[int, int] = (64, 48)) -> dict:
    """A small valid COCO dict with two categories (no image files)."""
    w, h = size
    images = [{"id": i, "file_name": f"img{i}.png", "width": w, "height": h} for i in range(1, n_images + 1)]
    anns, k = [], 0
    for i in range(1, n_images + 1):
        for j in range(boxes_per_image):
            k += 1
            anns.append({"id": k, "image_id": i, "category_id": 1 + (k % 2), "bbox": [2.0 + 3 * j, 4.0 + j, 10.0 + i, 8.5],
                         "area": (10.0 + i) * 8.5, "iscrowd": 0})
    cats = [{"id": 1, "name": "panda", "supercategory": "animal"}, {"id": 2, "name": "rock", "supercategory": "thing"}]
    return {"info": {"description": "test"}, "images": images, "annotations": anns, "categories": cats}
