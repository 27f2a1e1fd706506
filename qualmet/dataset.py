"""The in-memory model of a labeled detection data set: three pandas DataFrames and an image root.

``images``: id, file_name, width, height. ``annotations``: id, image_id, category_id, x, y, w, h
(COCO xywh in pixels), area, iscrowd, and ``score`` for predictions. ``categories``: id, name,
supercategory. Extra COCO keys are kept as extra columns so a COCO file round-trips unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .errors import Problem
from .paths import safe_join

IMAGE_COLUMNS = ["id", "file_name", "width", "height"]
ANNOTATION_COLUMNS = ["id", "image_id", "category_id", "x", "y", "w", "h", "area", "iscrowd"]
CATEGORY_COLUMNS = ["id", "name", "supercategory"]
BOX_COLUMNS = ["x", "y", "w", "h"]


def empty_images() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype="int64"), "file_name": pd.Series(dtype="object"),
                         "width": pd.Series(dtype="int64"), "height": pd.Series(dtype="int64")})


def empty_annotations(with_score: bool = False) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {
        "id": pd.Series(dtype="int64"), "image_id": pd.Series(dtype="int64"), "category_id": pd.Series(dtype="int64"),
        **{c: pd.Series(dtype="float64") for c in BOX_COLUMNS},
        "area": pd.Series(dtype="float64"), "iscrowd": pd.Series(dtype="int64"),
    }
    if with_score:
        cols["score"] = pd.Series(dtype="float64")
    return pd.DataFrame(cols)


def empty_categories() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype="int64"), "name": pd.Series(dtype="object"),
                         "supercategory": pd.Series(dtype="object")})


@dataclass
class Dataset:
    """A labeled detection data set (or a set of predictions) as plain DataFrames."""

    images: pd.DataFrame
    annotations: pd.DataFrame
    categories: pd.DataFrame
    image_root: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # other top-level COCO keys (info, licenses, ...)
    skipped: list[Problem] = field(default_factory=list)  # items the importer could not load, with why
    source: str = "<memory>"

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_records(cls, images: Iterable[dict], annotations: Iterable[dict], categories: Iterable[dict],
                     image_root: str | Path | None = None, **kw: Any) -> "Dataset":
        """Build from COCO-style record dicts (annotations carry ``bbox`` = [x, y, w, h])."""
        imgs = _records_frame(list(images), IMAGE_COLUMNS) if images else empty_images()
        cats = _records_frame(list(categories), CATEGORY_COLUMNS) if categories else empty_categories()
        anns_list = list(annotations)
        if anns_list:
            anns = _records_frame(anns_list, ANNOTATION_COLUMNS + ["bbox", "score"])
            bbox = np.asarray([list(map(float, b)) for b in anns.pop("bbox")], dtype=np.float64).reshape(-1, 4)
            for i, c in enumerate(BOX_COLUMNS):
                anns.insert(3 + i, c, bbox[:, i])
        else:
            anns = empty_annotations()
        return cls(images=imgs, annotations=anns, categories=cats,
                   image_root=Path(image_root) if image_root is not None else None, **kw).normalised()

    def normalised(self) -> "Dataset":
        """Return a copy with the standard columns present, in order, with their dtypes."""
        imgs = self.images.copy()
        for c in IMAGE_COLUMNS:
            if c not in imgs:
                imgs[c] = pd.Series(dtype="object")
        anns = self.annotations.copy()
        for c in BOX_COLUMNS:
            if c not in anns:
                anns[c] = pd.Series(dtype="float64")
        if "area" not in anns:
            anns["area"] = anns["w"] * anns["h"]
        anns["area"] = anns["area"].astype("float64").fillna(anns["w"] * anns["h"])
        if "iscrowd" not in anns:
            anns["iscrowd"] = 0
        anns["iscrowd"] = anns["iscrowd"].fillna(0).astype("int64")
        cats = self.categories.copy()
        if "supercategory" not in cats:
            cats["supercategory"] = pd.Series([None] * len(cats), dtype="object")
        for df, cols, ints in ((imgs, IMAGE_COLUMNS, ["id", "width", "height"]),
                               (anns, ANNOTATION_COLUMNS, ["id", "image_id", "category_id"]),
                               (cats, CATEGORY_COLUMNS, ["id"])):
            for c in ints:
                if c in df and len(df):
                    df[c] = df[c].astype("int64")
        imgs = imgs[IMAGE_COLUMNS + [c for c in imgs.columns if c not in IMAGE_COLUMNS]]
        lead = ANNOTATION_COLUMNS + (["score"] if "score" in anns else [])
        anns = anns[lead + [c for c in anns.columns if c not in lead]]
        cats = cats[CATEGORY_COLUMNS + [c for c in cats.columns if c not in CATEGORY_COLUMNS]]
        for c in BOX_COLUMNS + ["area"]:
            anns[c] = anns[c].astype("float64")
        return replace(self, images=imgs.reset_index(drop=True), annotations=anns.reset_index(drop=True),
                       categories=cats.reset_index(drop=True))

    # -- access -------------------------------------------------------------------------------
    def image_path(self, file_name: str) -> Path:
        """Absolute path of an image, refusing names that resolve outside the image root."""
        if self.image_root is None:
            raise ValueError(f"{self.source}: data set has no image root; pass --images DIR")
        return safe_join(self.image_root, file_name)

    def boxes(self) -> np.ndarray:
        """All annotation boxes as an (N, 4) float array in COCO xywh."""
        return self.annotations[BOX_COLUMNS].to_numpy(dtype=np.float64)

    @property
    def category_names(self) -> dict[int, str]:
        return dict(zip(self.categories["id"].astype(int), self.categories["name"].astype(str)))

    def annotations_by_image(self) -> dict[int, pd.DataFrame]:
        """Annotations grouped by image id; every image is a key (empty frame if it has no boxes)."""
        groups = {int(k): g for k, g in self.annotations.groupby("image_id", sort=False)}
        empty = self.annotations.iloc[0:0]
        return {int(i): groups.get(int(i), empty) for i in self.images["id"]}

    def subset(self, image_ids: Iterable[int]) -> "Dataset":
        """The data set restricted to these images, with their annotations and all categories."""
        ids = pd.Index(list(image_ids)).astype("int64")
        imgs = self.images[self.images["id"].isin(ids)].reset_index(drop=True)
        anns = self.annotations[self.annotations["image_id"].isin(ids)].reset_index(drop=True)
        return replace(self, images=imgs, annotations=anns, skipped=[])

    def copy(self) -> "Dataset":
        return replace(self, images=self.images.copy(), annotations=self.annotations.copy(),
                       categories=self.categories.copy(), info=dict(self.info), skipped=list(self.skipped))

    def summary(self) -> dict[str, Any]:
        """Counts a person wants first: frames, boxes, classes, boxes per frame, image sizes."""
        per_image = self.annotations.groupby("image_id").size().reindex(self.images["id"], fill_value=0)
        counts = self.annotations["category_id"].value_counts()
        return {
            "images": int(len(self.images)),
            "annotations": int(len(self.annotations)),
            # every category, by id (names two categories share get their id): none merged, none left out
            "categories": {label: int(counts.get(c, 0)) for c, label in category_labels(self.categories).items()},
            "boxes_per_image": {str(int(k)): int(v) for k, v in per_image.value_counts().sort_index().items()},
            "images_without_boxes": int((per_image == 0).sum()),
            "width_range": [int(self.images["width"].min()), int(self.images["width"].max())] if len(self.images) else [],
            "height_range": [int(self.images["height"].min()), int(self.images["height"].max())] if len(self.images) else [],
            "skipped_items": len(self.skipped),
        }

    # -- COCO ---------------------------------------------------------------------------------
    def to_coco(self) -> dict[str, Any]:
        """The canonical on-disk form: a COCO dict (predictions keep their ``score``)."""
        out: dict[str, Any] = dict(self.info)
        out["images"] = [clean_record(r) for r in self.images.to_dict("records")]
        anns = []
        for r in self.annotations.to_dict("records"):
            rec = {"id": int(r.pop("id")), "image_id": int(r.pop("image_id")), "category_id": int(r.pop("category_id")),
                   "bbox": [float(r.pop(c)) for c in BOX_COLUMNS], "area": float(r.pop("area")),
                   "iscrowd": int(r.pop("iscrowd"))}
            rec.update(clean_record(r))
            anns.append(rec)
        out["annotations"] = anns
        out["categories"] = [clean_record(r) for r in self.categories.to_dict("records")]
        return out

    def to_results(self) -> list[dict[str, Any]]:
        """COCO results list (image_id, category_id, bbox, score) for predictions."""
        if "score" not in self.annotations:
            raise ValueError(f"{self.source}: no 'score' column; these are labels, not predictions")
        a = self.annotations
        return [{"image_id": int(i), "category_id": int(c), "bbox": [float(x), float(y), float(w), float(h)],
                 "score": float(s)}
                for i, c, x, y, w, h, s in zip(a["image_id"], a["category_id"], a["x"], a["y"], a["w"], a["h"], a["score"])]


def category_labels(categories: pd.DataFrame, reserved: Iterable[str] = ()) -> dict[int, str]:
    """Category id -> label for tables, plots and counts: the name, or ``"name (id 3)"`` where several
    categories share a name (or a name is ``reserved``), so that no class hides another."""
    ids, names = [int(c) for c in categories["id"]], [str(n) for n in categories["name"]]
    taken = set(reserved)
    return {c: (f"{n} (id {c})" if names.count(n) > 1 or n in taken else n) for c, n in zip(ids, names)}


def is_int64(v: Any) -> bool:
    """A Python or numpy integer (not a bool) that fits an int64 column (JSON allows larger ones)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and -2 ** 63 <= int(v) < 2 ** 63


def _records_frame(records: list[dict], standard: list[str]) -> pd.DataFrame:
    """DataFrame of COCO records. An extra key holding whole numbers that some records lack becomes a
    nullable integer column (``Int64``): a float column would make 3 into 3.0 and round integers above
    2**53; arithmetic, ``isna`` and ``to_numpy(dtype=float)`` work on it as on floats (missing -> NaN).
    Missing values are not written back (``to_coco`` omits the key)."""
    df = pd.DataFrame(records)
    for c in df.columns:
        if c in standard or df[c].dtype.kind != "f":
            continue
        vals = [r.get(c) for r in records]
        present = [v for v in vals if v is not None]
        if present and all(is_int64(v) for v in present):
            df[c] = pd.array(vals, dtype="Int64")
    return df


def clean_record(r: dict[str, Any]) -> dict[str, Any]:
    """A record ready for JSON: missing extras dropped (None/pd.NA/NaN: another record's key, or null),
    numpy scalars turned into Python ones."""
    out = {}
    for k, v in r.items():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        out[k] = v
    return out
