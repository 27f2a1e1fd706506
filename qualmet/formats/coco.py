"""COCO JSON: the canonical on-disk form. Loading checks every record and never drops one silently."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import atomic
from ..dataset import Dataset, empty_annotations, is_int64
from ..errors import DatasetError, Problem


SIDECAR = ".images"  # NAME.images beside NAME.json: the image root, when it is not the default


def sidecar_path(json_path: str | os.PathLike) -> Path:
    """``NAME.images`` for ``NAME.json``; ``FILE.images`` for any other file name (``data.v1`` and
    ``data.v2`` must not share one). Beside the file itself when the path is a symbolic link."""
    return _sidecar_beside(Path(json_path).resolve())


def _sidecar_beside(p: Path) -> Path:
    return p.with_suffix(SIDECAR) if p.suffix.lower() == ".json" else p.with_name(p.name + SIDECAR)


def _plain_image_root(json_path: Path) -> Path:
    parent = json_path.resolve().parent
    return parent / "images" if (parent / "images").is_dir() else parent


def default_image_root(json_path: str | os.PathLike) -> Path:
    """Where a COCO file's images are when no ``--images`` is given: the folder its ``.images``
    sidecar names (written by ``save_coco``; relative to the JSON's folder); else an ``images/``
    folder beside the JSON; else the JSON's own folder. When the sidecar's folder is gone, ``images/``
    beside the JSON is used if it is there (a folder moved with its images); otherwise that is an
    error naming the sidecar, not a silent other folder where every image is "not found"."""
    side = sidecar_path(json_path)
    if not side.is_file():
        return _plain_image_root(Path(json_path))
    try:
        named = side.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{side}: cannot read this image-folder sidecar ({exc}); pass --images DIR") from None
    root = (side.parent / named).resolve()
    if root.is_dir():
        return root
    if (side.parent / "images").is_dir():
        return side.parent / "images"
    raise DatasetError(f"{side} names the image folder {named} ({root}), which does not exist; pass "
                       "--images DIR, or delete the sidecar")


def check_coco_target(path: str | os.PathLike) -> None:
    """Refuse, before anything is written, a path ``save_coco`` cannot write with its sidecar."""
    p = Path(path)
    if p.suffix.lower() == SIDECAR:
        raise DatasetError(f"{p}: a COCO file cannot be named *{SIDECAR}: that is the name of its image-folder sidecar")
    side = _sidecar_beside(p.parent.resolve() / p.name)
    if side.is_dir():
        raise DatasetError(f"{side} is a folder; it would be the image-folder sidecar of {p}: choose another name")


def read_json(path: str | os.PathLike, folder_hint: str = "") -> Any:
    """Parse a JSON file; a malformed one raises DatasetError with line and column, a folder one that
    ends with ``folder_hint``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{p}: is a folder, not a JSON file{folder_hint}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DatasetError(f"{p}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{p}: line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg})") from None


_RESERVED_ANN_KEYS = ("x", "y", "w", "h")  # qualmet's own box columns; a COCO key of that name would clash


def _kind(v: Any) -> str:
    """The type name shown in messages; an integer outside int64 says so."""
    if isinstance(v, int) and not isinstance(v, bool) and not is_int64(v):
        return "int outside the 64-bit range"
    return type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    """A finite number that converts to float (huge JSON integers overflow float and are refused)."""
    if not _is_num(v):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def parse_coco(d: Any, source: str = "<memory>", image_root: str | os.PathLike | None = None) -> Dataset:
    """Turn a COCO dict into a Dataset; records that cannot be loaded go to ``dataset.skipped``."""
    if not isinstance(d, dict):
        raise DatasetError(f"{source}: top level must be a JSON object with 'images', 'annotations', 'categories'; got {type(d).__name__}")
    if "images" not in d:
        raise DatasetError(f"{source}: missing required key 'images'")
    problems: list[Problem] = []

    def bad(item: str, msg: str) -> None:
        problems.append(Problem("error", source, item, msg))

    for key in ("images", "annotations", "categories"):
        if key in d and not isinstance(d[key], list):
            raise DatasetError(f"{source}: '{key}' must be a list, got {type(d[key]).__name__}")

    cats = _categories(d.get("categories", []), bad)
    imgs = _images(d["images"], bad)
    anns = _annotations(d.get("annotations", []), {im["id"] for im in imgs}, {c["id"] for c in cats}, bad)

    info = {k: v for k, v in d.items() if k not in ("images", "annotations", "categories")}
    ds = Dataset.from_records(imgs, anns, cats, image_root=image_root, info=info, source=source)
    ds.skipped = problems
    return ds


def _categories(records: list, bad: Callable[[str, str], None]) -> list[dict]:
    """The loadable category records (integer id, string name, first of a duplicated id)."""
    cats, cat_ids = [], set()
    for n, c in enumerate(records):
        item = f"categories[{n}]"
        if not isinstance(c, dict) or not is_int64(c.get("id")) or not isinstance(c.get("name"), str):
            bad(item, f"a category needs an integer 'id' and a string 'name'; got {json.dumps(c)[:120]}")
            continue
        if c["id"] in cat_ids:
            bad(f"category {c['id']}", "duplicate category id; the later one is ignored")
            continue
        cat_ids.add(c["id"])
        cats.append(c)
    return cats


def _images(records: list, bad: Callable[[str, str], None]) -> list[dict]:
    """The loadable image records (integer id, file name, positive size, first of a duplicated id)."""
    imgs, img_ids = [], set()
    for n, im in enumerate(records):
        item = f"images[{n}]"
        if not isinstance(im, dict):
            bad(item, f"an image must be an object, got {type(im).__name__}")
            continue
        missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if missing:
            bad(item, f"image is missing key(s) {', '.join(missing)}")
            continue
        if not is_int64(im["id"]):
            bad(item, f"image id must be an integer, got {_kind(im['id'])} {im['id']!r}")
            continue
        item = f"image {im['id']} ({im['file_name']})"
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            bad(item, f"file_name must be a non-empty string, got {im['file_name']!r}")
            continue
        if not (is_int64(im["width"]) and is_int64(im["height"]) and im["width"] > 0 and im["height"] > 0):
            bad(item, f"width and height must be positive integers, got {im['width']!r} x {im['height']!r}")
            continue
        if im["id"] in img_ids:
            bad(item, "duplicate image id; the later one is ignored")
            continue
        img_ids.add(im["id"])
        imgs.append(im)
    return imgs


def _annotations(records: list, img_ids: set, cat_ids: set, bad: Callable[[str, str], None]) -> list[dict]:
    """The loadable annotation records: integer ids of a loaded image and category, a finite
    [x, y, w, h] bbox, finite score and area, iscrowd 0 or 1, no key clashing with the box columns."""
    anns, ann_ids = [], set()
    for n, a in enumerate(records):
        item = f"annotations[{n}]"
        if not isinstance(a, dict):
            bad(item, f"an annotation must be an object, got {type(a).__name__}")
            continue
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in a]
        if missing:
            bad(item, f"annotation is missing key(s) {', '.join(missing)}")
            continue
        wrong = [k for k in ("id", "image_id", "category_id") if not is_int64(a[k])]
        if wrong:
            bad(item, "; ".join(f"{k} must be an integer, got {_kind(a[k])} {a[k]!r}" for k in wrong))
            continue
        item = f"annotation {a['id']} (image {a['image_id']})"
        b = a["bbox"]
        if not isinstance(b, list) or len(b) != 4 or not all(_is_num(v) for v in b):
            bad(item, f"bbox must be a list of 4 numbers [x, y, w, h], got {json.dumps(b)[:80]}")
            continue
        if not all(_is_finite(v) for v in b):
            bad(item, f"bbox has a NaN, infinite or out-of-range coordinate: {json.dumps(b)[:80]}")
            continue
        if a["id"] in ann_ids:
            bad(item, "duplicate annotation id; the later one is ignored")
            continue
        if a["image_id"] not in img_ids:
            bad(item, f"image_id {a['image_id']} is not a loaded image")
            continue
        if a["category_id"] not in cat_ids:
            bad(item, f"unknown category_id {a['category_id']}")
            continue
        if "score" in a and not _is_finite(a["score"]):
            bad(item, f"score must be a finite number, got {a['score']!r}")
            continue
        if a.get("area") is not None and not _is_finite(a["area"]):
            bad(item, f"area must be a finite number, got {a['area']!r}")
            continue
        if "iscrowd" in a and not (isinstance(a["iscrowd"], int) and a["iscrowd"] in (0, 1)):
            bad(item, f"iscrowd must be 0 or 1, got {a['iscrowd']!r}")
            continue
        clash = [k for k in _RESERVED_ANN_KEYS if k in a]
        if clash:
            bad(item, f"key(s) {', '.join(clash)} clash with qualmet's box columns; keep the box in 'bbox' only")
            continue
        ann_ids.add(a["id"])
        anns.append(a)
    return anns


def load_coco(path: str | os.PathLike, images: str | os.PathLike | None = None, on_invalid: str = "raise") -> Dataset:
    """Load a COCO JSON file. ``on_invalid="raise"`` refuses a file with unloadable records, naming
    each; ``"skip"`` loads the rest and lists what was skipped in ``dataset.skipped``."""
    p = Path(path)
    root = Path(images) if images is not None else default_image_root(p)
    hint = (f" (for a VOC, YOLO or CSV data set, `qualmet convert {p} --out data.json` writes the COCO JSON this "
            "command takes)")
    ds = parse_coco(read_json(p, hint), source=str(p), image_root=root)
    if ds.skipped and on_invalid == "raise":
        shown = "; ".join(f"{x.item}: {x.message}" for x in ds.skipped[:5])
        more = f" (and {len(ds.skipped) - 5} more)" if len(ds.skipped) > 5 else ""
        raise DatasetError(f"{p}: {len(ds.skipped)} record(s) cannot be loaded: {shown}{more}", ds.skipped)
    return ds


def save_coco(ds: Dataset, path: str | os.PathLike, indent: int | None = None) -> Path:
    """Atomically write a Dataset as COCO JSON; a NaN or infinite value anywhere raises DatasetError.

    COCO JSON has no field for the image folder, so when the data set's images are not where loading
    the file would look by default (``images/`` beside it, else its folder), a ``NAME.images``
    sidecar names their folder (relative to the JSON's), and the file loads back with its images."""
    p = Path(path)
    check_coco_target(p)
    where = p.parent.resolve() / p.name  # the atomic write puts a file here (it replaces a link, if any)
    side = _sidecar_beside(where)
    try:
        out = atomic.write_json(p, ds.to_coco(), indent=indent)
    except ValueError as exc:  # json refuses NaN/inf (JSON has none), e.g. in an extra key's value
        raise DatasetError(f"{p}: cannot write COCO JSON: {exc} (a value is NaN or infinite)") from None
    if ds.image_root is not None and Path(ds.image_root).resolve() != _plain_image_root(where):
        root = Path(ds.image_root).resolve()
        try:
            rel = os.path.relpath(root, side.parent)  # survives moving the whole tree
        except ValueError:  # another drive (Windows): only an absolute path can name it
            rel = str(root)
        atomic.write_text(side, rel + "\n")
    elif side.is_file():  # a sidecar left by an earlier save would now point elsewhere
        side.unlink()
    return out


def load_predictions(path: str | os.PathLike, images: Dataset | pd.DataFrame | None = None,
                     categories: pd.DataFrame | None = None, where: str | None = None,
                     match_by: str = "id") -> pd.DataFrame:
    """Load a COCO results list (image_id, category_id, bbox, score) into an annotations-shaped
    DataFrame (ids assigned 1..N in file order), checked by :func:`qualmet.predictions.check_predictions`
    against the data set: pass it whole (``images=dataset``), or its images and categories tables.
    Unknown image or category ids are a :class:`DatasetError` naming the file and the first bad prediction.
    ``match_by="file_name"`` maps each prediction to the image its ``image_id`` names by file name or stem
    (Ultralytics' predictions.json), or, for a COCO file with its own ``images``, by their file names."""
    from ..predictions import check_predictions, match_by_file_name, where_of

    if match_by not in ("id", "file_name"):
        raise DatasetError(f"match_by must be 'id' or 'file_name', got {match_by!r}")
    if isinstance(images, Dataset):
        where = where or where_of(images.source)
        images, categories = images.images, images.categories if categories is None else categories
    p = Path(path)
    d = read_json(p)
    own_images = None
    if isinstance(d, dict) and "annotations" in d:  # a full COCO file of predictions is accepted too
        own_images = d.get("images") if isinstance(d.get("images"), list) else None
        d = d["annotations"]
    if not isinstance(d, list):
        raise DatasetError(f"{p}: predictions must be a COCO results list, got {type(d).__name__}")
    if match_by == "file_name":
        if images is None:
            raise DatasetError(f"{p}: matching predictions by file name needs the data set's images")
        d = match_by_file_name(d, images, str(p), own_images)
    recs = []
    for n, r in enumerate(d):
        item = f"prediction [{n}]"
        if not isinstance(r, dict) or not all(k in r for k in ("image_id", "category_id", "bbox", "score")):
            raise DatasetError(f"{p}: {item}: needs image_id, category_id, bbox and score")
        b = r["bbox"]
        wrong = [k for k in ("image_id", "category_id") if not is_int64(r[k])]
        if wrong:
            hint = (" (an image named by file name or stem, as Ultralytics writes it: match by file name, "
                    "--match-by file_name)") if isinstance(r["image_id"], str) else ""
            raise DatasetError(f"{p}: {item}: " + "; ".join(f"{k} must be an integer, got {r[k]!r}" for k in wrong)
                               + hint)
        if not (isinstance(b, list) and len(b) == 4 and all(_is_finite(v) for v in b)):
            raise DatasetError(f"{p}: {item}: bbox must be 4 finite numbers, got {b!r}")
        if not _is_finite(r["score"]):
            raise DatasetError(f"{p}: {item}: score must be a finite number, got {r['score']!r}")
        recs.append({"id": n + 1, "image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
                     "x": float(b[0]), "y": float(b[1]), "w": float(b[2]), "h": float(b[3]),
                     "area": float(b[2]) * float(b[3]), "iscrowd": 0, "score": float(r["score"])})
    if not recs:
        return empty_annotations(with_score=True)
    df = pd.DataFrame(recs)
    check_predictions(df, images, categories, where=where or "the data set", file=str(p))
    return df
