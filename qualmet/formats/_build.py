"""Shared assembly for importers that see (file, size, class name, box) rows: stable ids, one place."""
from __future__ import annotations

import math
from pathlib import Path

from ..dataset import Dataset
from ..errors import Problem

MAX_SIDE = 2 ** 31 - 1  # image sides are stored as int64 and handed to OpenCV as int


def parse_size(width: object, height: object) -> tuple[int, int] | str:
    """(width, height) from text such as "640" or "640.0", or why they are unusable: an image side
    must be a whole, positive number (a 0 x 0 size is a common defect of VOC exports)."""
    try:
        w, h = float(width), float(height)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "width and height must be numbers"
    if not all(math.isfinite(v) and v == int(v) and 1 <= v <= MAX_SIDE for v in (w, h)):
        return f"width and height must be positive whole numbers, got {width} x {height}"
    return int(w), int(h)


def build_dataset(frames: list[dict], source: str, image_root: Path | None, problems: list[Problem],
                  class_names: list[str] | None = None) -> Dataset:
    """``frames``: [{file_name, width, height, objects: [(name, x, y, w, h[, extra]), ...][, image_extra]}],
    where ``extra`` holds more annotation keys (a ``segmentation``, a ``score``) and ``image_extra``
    more image keys (an Ultralytics ``split``).

    Image ids follow sorted file names, category ids follow ``class_names`` (or sorted names), so
    the same folder always gives the same ids whichever importer read it.
    """
    names = list(class_names) if class_names is not None else sorted({o[0] for f in frames for o in f["objects"]})
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images, anns = [], []
    for img_id, f in enumerate(sorted(frames, key=lambda f: f["file_name"]), start=1):
        images.append({"id": img_id, "file_name": f["file_name"], "width": int(f["width"]), "height": int(f["height"]),
                       **f.get("image_extra", {})})
        for name, x, y, w, h, *extra in f["objects"]:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat_id[name],
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, **(extra[0] if extra else {})})
    cats = [{"id": i, "name": n, "supercategory": "none"} for n, i in cat_id.items()]
    ds = Dataset.from_records(images, anns, cats, image_root=image_root, source=source)
    ds.skipped = problems
    return ds
