"""Importers and exporters: COCO (canonical), Pascal VOC, YOLO (also Ultralytics' data.yaml layout),
CSV. ``load_dataset`` picks by path."""
from __future__ import annotations

import os
from pathlib import Path

from ..dataset import Dataset
from ..errors import DatasetError
from .coco import load_coco, load_predictions, parse_coco, save_coco
from .csvfmt import load_csv
from .voc import load_voc
from .ultralytics import is_split_layout, load_ultralytics, save_ultralytics
from .yolo import load_yolo, save_yolo

FORMATS = ("coco", "voc", "yolo", "csv")

__all__ = ["FORMATS", "detect_format", "load_dataset", "load_coco", "load_csv", "load_voc", "load_yolo",
           "load_predictions", "load_ultralytics", "parse_coco", "save_coco", "save_ultralytics", "save_yolo"]


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format: ``.json`` COCO, ``.csv`` CSV, a folder of ``.xml`` VOC, of ``.txt`` YOLO, a
    data.yaml (or a folder with one, or with images/<split> + labels/<split>) YOLO in Ultralytics' layout."""
    p = Path(path)
    if is_split_layout(p):
        return "yolo"
    if p.is_file() or p.suffix:
        ext = p.suffix.lower()
        if ext == ".json":
            return "coco"
        if ext == ".csv":
            return "csv"
        raise DatasetError(f"{p}: cannot tell the format from the extension {ext!r}; pass --format")
    if p.is_dir():
        if any(p.glob("*.xml")):
            return "voc"
        if any(p.glob("*.txt")) or any((p / "labels").glob("*.txt")) or (p / "obj.names").is_file():
            return "yolo"  # a labels folder, or a ROOT with labels/ (and images/) below it
        raise DatasetError(f"{p}: folder has neither .xml (VOC) nor .txt (YOLO) files")
    raise DatasetError(f"{p}: no such file or folder")


def load_dataset(path: str | os.PathLike, fmt: str = "auto", images: str | os.PathLike | None = None,
                 on_invalid: str = "raise", names: str | os.PathLike | None = None,
                 split: str | None = None) -> Dataset:
    """Load a data set in any supported format; unloadable items raise (or are listed in ``skipped``).
    ``names`` (a classes.txt or data.yaml) and ``split`` (of an Ultralytics data set) are for YOLO only."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if (names is not None or split is not None) and fmt != "yolo":
        raise DatasetError(f"{path}: --names and --split are for YOLO data sets, and this is {fmt}")
    if fmt == "coco":
        return load_coco(path, images=images, on_invalid=on_invalid)
    loaders = {"voc": load_voc, "csv": load_csv, "yolo": load_yolo}
    if fmt not in loaders:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if split is not None:
        if not is_split_layout(path):
            raise DatasetError(f"{path}: --split is for an Ultralytics data.yaml or images/<split> layout")
        ds = load_ultralytics(path, split=split, names=names)
    else:
        ds = loaders[fmt](path, images=images, **({"names": names} if fmt == "yolo" else {}))
    if ds.skipped and on_invalid == "raise":
        shown = "; ".join(f"{x.file}: {x.item}: {x.message}" for x in ds.skipped[:5])
        raise DatasetError(f"{path}: {len(ds.skipped)} item(s) cannot be loaded: {shown}", ds.skipped)
    return ds
