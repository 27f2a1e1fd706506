"""Pascal VOC XML folders (one XML per image). Boxes become x=xmin, y=ymin, w=xmax-xmin, h=ymax-ymin."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..dataset import Dataset
from ..errors import DatasetError, Problem
from ._build import build_dataset, parse_size


def load_voc(folder: str | os.PathLike, images: str | os.PathLike | None = None) -> Dataset:
    """Load every ``*.xml`` in ``folder``; an object without a usable box is skipped with a reason."""
    root_dir = Path(folder)
    if not root_dir.is_dir():
        raise DatasetError(f"{root_dir}: not a folder of VOC XML files")
    files = sorted(root_dir.glob("*.xml"))
    if not files:
        raise DatasetError(f"{root_dir}: no .xml files found")
    problems: list[Problem] = []
    frames = []
    seen: dict[str, Path] = {}  # image file name -> the XML that named it first
    for xf in files:
        try:
            tree = ET.parse(xf)
        except ET.ParseError as exc:
            line, col = exc.position
            problems.append(Problem("error", str(xf), f"line {line}", f"malformed XML at column {col} ({exc})"))
            continue
        ann = tree.getroot()
        fname = (ann.findtext("filename") or "").strip()
        size = ann.find("size")
        wh = parse_size(size.findtext("width"), size.findtext("height")) if size is not None else "missing <size>"
        if isinstance(wh, str):
            problems.append(Problem("error", str(xf), fname or "<no filename>", f"<size>: {wh}"))
            continue
        width, height = wh
        if not fname:
            problems.append(Problem("error", str(xf), "<filename>", "missing <filename>"))
            continue
        if fname in seen:
            problems.append(Problem("error", str(xf), fname, f"{seen[fname].name} names the same image; this file is skipped"))
            continue
        seen[fname] = xf
        objects = []
        for k, obj in enumerate(ann.findall("object")):
            name = (obj.findtext("name") or "").strip()
            item = f"{fname} object {k} ({name or 'no name'})"
            bb = obj.find("bndbox")
            if not name:
                problems.append(Problem("error", str(xf), item, "object has no <name>"))
                continue
            if bb is None:
                problems.append(Problem("error", str(xf), item, "object has no <bndbox>"))
                continue
            try:
                x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                problems.append(Problem("error", str(xf), item, "<bndbox> needs numeric xmin, ymin, xmax, ymax"))
                continue
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                problems.append(Problem("error", str(xf), item, "<bndbox> has a NaN or infinite coordinate"))
                continue
            objects.append((name, x1, y1, x2 - x1, y2 - y1))
        frames.append({"file_name": fname, "width": width, "height": height, "objects": objects})
    img_root = Path(images) if images is not None else (root_dir.parent / "images" if (root_dir.parent / "images").is_dir() else root_dir)
    return build_dataset(frames, str(root_dir), img_root, problems)

