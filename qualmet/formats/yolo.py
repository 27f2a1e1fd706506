"""YOLO txt folders: one ``<stem>.txt`` per image, lines ``class cx cy w h`` normalised to [0, 1],
with class names one per line in ``classes.txt`` (``obj.names`` is accepted too).

Ultralytics' line variants load too: ``class cx cy w h conf`` (a prediction: the confidence becomes the
``score``), and YOLO-seg polygons ``class x1 y1 x2 y2 x3 y3 ...`` (optionally followed by a confidence),
whose box is the polygon's bounds and whose polygon is kept as the COCO ``segmentation``. The data.yaml
split layout is :mod:`qualmet.formats.ultralytics`."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..boxes import xywh_to_yolo, yolo_to_xywh
from ..dataset import Dataset
from ..errors import DatasetError, ImageError, Problem
from ..imageio import image_size
from ._build import build_dataset

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _names_file(labels: Path, names: str | os.PathLike | None) -> Path:
    """The class-names file: ``names``, else classes.txt / obj.names beside the labels or one folder
    up. In the ROOT/labels layout ROOT's file comes first: a labels/classes.txt there is the label
    file of an image named classes.*."""
    if names is not None:
        return Path(names)
    folders = (labels.parent, labels) if labels.name == "labels" else (labels, labels.parent)
    for cand in ("classes.txt", "obj.names"):
        for d in folders:
            if (d / cand).is_file():
                return d / cand
    raise DatasetError(f"{labels}: no classes.txt or obj.names found; pass the class-names file")


def _label_files(folder: Path, names: Path | None) -> list[Path]:
    """The .txt files of ``folder`` other than the class-names file (any of the usual names when
    that file is not known yet)."""
    if names is None:
        return sorted(p for p in folder.glob("*.txt") if p.name not in ("classes.txt", "obj.names"))
    return sorted(p for p in folder.glob("*.txt") if p.resolve() != names.resolve())


def _class_names(path: Path) -> list[str]:
    """One name per line (or an Ultralytics data.yaml's ``names``); blank lines at the end are ignored, a
    blank line before a name is an error (it would shift the class index of every name after it)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        from .ultralytics import read_data_yaml

        return read_data_yaml(path)["names"]
    if not path.is_file():
        raise DatasetError(f"{path}: class-names file not found")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    while lines and not lines[-1]:
        lines.pop()
    blank = [n for n, ln in enumerate(lines, start=1) if not ln]
    if blank:
        raise DatasetError(f"{path}: line {blank[0]} is blank; class k is the name on line k + 1, so a blank "
                           "line would shift every class after it (remove it, or give the class a name)")
    first: dict[str, int] = {}
    for n, name in enumerate(lines, start=1):
        if first.setdefault(name, n) != n:
            raise DatasetError(f"{path}: lines {first[name]} and {n} both name {name!r}; their classes would merge")
    return lines


def parse_line(line: str, class_names: list[str], w: int, h: int, names_file: str = "classes.txt") -> tuple | str:
    """One label line as an object (name, x, y, w, h, extra) in pixels, or why it cannot be loaded.

    5 fields: a box; 6: a box and a confidence; 7 or more: a polygon of 3 or more points, followed by a
    confidence when the count of fields is even. ``extra`` holds ``segmentation`` and ``score`` when given."""
    parts = line.split()
    if len(parts) < 5:
        return (f"expected 5 fields 'class cx cy w h', got {len(parts)} (6 with a confidence; 7 or more for a "
                "polygon 'class x1 y1 x2 y2 x3 y3 ...')")
    try:
        cls = int(parts[0])
        vals = [float(v) for v in parts[1:]]
    except ValueError:
        return f"non-numeric field in {line.strip()!r}"
    if not 0 <= cls < len(class_names):
        return f"class {cls} not in {names_file} ({len(class_names)} names)"
    extra: dict = {}
    if len(vals) in (5,) or (len(vals) >= 7 and len(vals) % 2):  # the last value is a confidence
        conf = vals.pop()
        if not (math.isfinite(conf) and 0.0 <= conf <= 1.0):
            return f"confidence must lie in [0, 1], got {conf}"
        extra["score"] = conf
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        return f"normalised values must lie in [0, 1], got {vals}"
    if len(vals) == 4:
        x, y, bw, bh = (float(v) for v in yolo_to_xywh(vals, w, h)[0])
        return (class_names[cls], x, y, bw, bh, extra)
    xs, ys = np.asarray(vals[0::2]) * w, np.asarray(vals[1::2]) * h
    extra["segmentation"] = [[float(v) for xy in zip(xs, ys) for v in xy]]
    x0, y0 = float(xs.min()), float(ys.min())
    return (class_names[cls], x0, y0, float(xs.max()) - x0, float(ys.max()) - y0, extra)


def _default_images(lab: Path) -> Path:
    """ROOT/images beside ROOT/labels; else, by Ultralytics' rule, the folder whose path has the last
    ``labels`` replaced by ``images`` (ROOT/labels/train -> ROOT/images/train); else the labels folder."""
    if (lab.parent / "images").is_dir():
        return lab.parent / "images"
    parts = list(lab.resolve().parts)
    k = max((i for i, part in enumerate(parts) if part == "labels"), default=None)
    if k is not None and Path(*parts[:k], "images", *parts[k + 1:]).is_dir():
        return Path(*parts[:k], "images", *parts[k + 1:])
    return lab


def load_yolo(labels: str | os.PathLike, images: str | os.PathLike | None = None,
              names: str | os.PathLike | None = None) -> Dataset:
    """Load a YOLO labels folder; image sizes are read from the image headers in ``images``."""
    lab = Path(labels)
    from .ultralytics import is_split_layout, load_ultralytics

    if is_split_layout(lab):  # data.yaml, or ROOT/images/<split> + ROOT/labels/<split>
        if images is not None:
            raise DatasetError(f"{lab}: the Ultralytics layout finds images beside labels; leave out --images")
        return load_ultralytics(lab, names=names)
    if not lab.is_dir():
        raise DatasetError(f"{lab}: not a folder of YOLO .txt label files")
    if (lab / "labels").is_dir() and not _label_files(lab, Path(names) if names else None):  # ROOT/images, ROOT/labels
        lab = lab / "labels"
    img_dir = Path(images) if images is not None else _default_images(lab)
    names_path = _names_file(lab, names)
    class_names = _class_names(names_path)
    problems: list[Problem] = []
    frames = []
    image_files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS) if img_dir.is_dir() else []
    stems: dict[str, list[Path]] = {}
    for img in image_files:
        stems.setdefault(img.stem, []).append(img)
    for stem, same in stems.items():  # x.jpg and x.png: which one x.txt labels cannot be known
        if len(same) > 1:
            problems.append(Problem("error", str(img_dir), stem, "images " + " and ".join(p.name for p in same)
                                    + f" share the name stem {stem!r}, which labels/{stem}.txt cannot tell apart; "
                                    "both are skipped (rename one)"))
    by_stem = {stem: same[0] for stem, same in stems.items() if len(same) == 1}
    image_files = [p for p in image_files if p.stem in by_stem]
    # a second copy of the class names (labels/classes.txt beside ROOT/classes.txt) is not a label
    # file, unless an image of that name (classes.jpg) says it is one
    label_files = [t for t in _label_files(lab, names_path)
                   if t.name not in ("classes.txt", "obj.names") or t.stem in by_stem]
    if not label_files and not image_files:
        raise DatasetError(f"{lab}: no YOLO label (.txt) files and no images in {img_dir}")
    for txt in label_files:
        img = by_stem.get(txt.stem)
        if img is None and len(stems.get(txt.stem, ())) > 1:
            continue  # reported above
        if img is None:
            problems.append(Problem("error", str(txt), txt.stem, f"no image named {txt.stem}.* in {img_dir}"))
            continue
        try:
            w, h = image_size(img)
        except ImageError as exc:
            problems.append(Problem("error", str(img), img.name, str(exc)))
            continue
        objects = []
        try:
            text = txt.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem("error", str(txt), txt.stem, f"not UTF-8 text (byte {exc.start}); file skipped"))
            continue
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                obj = parse_line(line, class_names, w, h, names_path.name)
                if isinstance(obj, str):
                    problems.append(Problem("error", str(txt), f"line {n}", obj))
                else:
                    objects.append(obj)
        frames.append({"file_name": img.name, "width": w, "height": h, "objects": objects})
    labelled = {t.stem for t in label_files}
    for img in image_files:  # images with no label file are images with no boxes
        if img.stem not in labelled:
            try:
                w, h = image_size(img)
            except ImageError as exc:
                problems.append(Problem("error", str(img), img.name, str(exc)))
                continue
            frames.append({"file_name": img.name, "width": w, "height": h, "objects": []})
    return build_dataset(frames, str(lab), img_dir, problems, class_names=class_names)


def class_index(ds: Dataset) -> dict[int, int]:
    """Category id -> YOLO class index (categories in id order), after checking that every name can be
    written one per line and read back as itself."""
    cats = ds.categories.sort_values("id")
    seen: dict[str, int] = {}
    for cid, name in zip(cats["id"], cats["name"]):  # classes.txt is one name per line, read back stripped
        if not isinstance(name, str) or not name.strip() or any(ch in name for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise DatasetError(f"category {int(cid)}: name {name!r} cannot be written to a YOLO classes.txt "
                               "(empty, or contains a line break)")
        if seen.setdefault(name.strip(), int(cid)) != int(cid):
            raise DatasetError(f"categories {seen[name.strip()]} and {int(cid)} are both named {name.strip()!r}; "
                               "YOLO names classes by line, so they would load back as one")
    return {int(c): k for k, c in enumerate(cats["id"])}


def save_yolo(ds: Dataset, out_dir: str | os.PathLike, image_ids=None, link_images: bool = False) -> Path:
    """Write ``labels/<stem>.txt`` for each image (of ``image_ids`` if given) and ``classes.txt``;
    with ``link_images``, also ``images/<name>`` linking to each source image, so the folder loads
    back as a YOLO data set.

    Class index k is the k-th category in id order; values are written with 10 decimals. Boxes that
    stick out of the image are clipped to it (YOLO's normalised values cannot go beyond it); a box
    entirely outside, a class name that is empty, holds a line break or is used twice, two images with one name stem,
    an unreadable source image or label files of other images already in ``out_dir/labels`` raise
    DatasetError before anything is written."""
    out = Path(out_dir)
    sub = ds.subset(image_ids) if image_ids is not None else ds
    cats = ds.categories.sort_values("id")
    index = class_index(ds)
    stems: dict[str, tuple[int, str]] = {}
    for iid, fn in zip(sub.images["id"], sub.images["file_name"]):  # labels/<stem>.txt: one file per stem
        other = stems.setdefault(Path(fn).stem, (int(iid), fn))
        if other[0] != int(iid):
            what = f"images {other[0]} and {int(iid)} are both named {fn!r}" if other[1] == fn else \
                f"images {other[1]!r} and {fn!r} have the same name stem"
            raise DatasetError(f"{what}; YOLO label files are named by stem, so they cannot both be written")
    for folder, exts in (("labels", (".txt",)), ("images", IMAGE_EXTS if link_images else ())):
        stale = sorted(q.name for q in (out / folder).glob("*") if q.suffix.lower() in exts and q.stem not in stems) \
            if (out / folder).is_dir() else []
        if stale:
            raise DatasetError(f"{out / folder} already holds files of other images ({', '.join(stale[:3])}"
                               f"{', ...' if len(stale) > 3 else ''}); they would load with this data set: "
                               "choose an empty folder")
    lines_of = _label_lines(sub, index)
    sources = _image_sources(sub) if link_images else []
    write_text(out / "classes.txt", "".join(f"{n}\n" for n in cats["name"]))
    for im in sub.images.itertuples(index=False):
        write_text(out / "labels" / f"{Path(im.file_name).stem}.txt", "".join(lines_of.get(int(im.id), [])))
    if link_images:
        _link_images(sources, out / "images")
    return out


def _polygon(seg: object) -> np.ndarray | None:
    """A COCO segmentation that is one polygon (3 or more points) as an (N, 2) array; else None (no mask,
    several parts or RLE: YOLO-seg holds one polygon per object, so those objects are written as boxes)."""
    if isinstance(seg, (list, tuple)) and len(seg) == 1 and isinstance(seg[0], (list, tuple)) and \
            len(seg[0]) >= 6 and len(seg[0]) % 2 == 0:
        pts = np.asarray(seg[0], dtype=np.float64).reshape(-1, 2)
        return pts if np.isfinite(pts).all() else None
    return None


def _label_lines(ds: Dataset, index: dict[int, int]) -> dict[int, list[str]]:
    """Per image id, its YOLO label lines: a polygon line for an object with a one-polygon segmentation,
    else a box line (boxes and points clipped to the image), each followed by its score when it has one."""
    from ..boxes import clip_xywh

    sizes = ds.images.set_index("id")[["width", "height"]]
    out: dict[int, list[str]] = {}
    for iid, g in ds.annotations.groupby("image_id"):
        W, H = (int(v) for v in sizes.loc[int(iid)])
        boxes = clip_xywh(g[["x", "y", "w", "h"]].to_numpy(dtype=np.float64), W, H)
        empty = np.flatnonzero((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))
        if len(empty):
            k = empty[0]
            raise DatasetError(f"annotation {int(g['id'].iloc[k])} (image {int(iid)}): box "
                               f"{g[['x', 'y', 'w', 'h']].iloc[k].tolist()} has no area inside the {W}x{H} image; "
                               "YOLO cannot store it (qualmet validate lists such boxes)")
        segs = g["segmentation"] if "segmentation" in g else [None] * len(g)
        scores = g["score"] if "score" in g else [None] * len(g)
        lines = []
        for c, row, seg, score in zip(g["category_id"], xywh_to_yolo(boxes, W, H), segs, scores):
            poly = _polygon(seg)
            vals = row if poly is None else (np.clip(poly, 0, [W, H]) / [W, H]).ravel()
            tail = f" {float(score):.10f}" if score is not None and np.isfinite(score) else ""
            lines.append(f"{index[int(c)]} " + " ".join(f"{v:.10f}" for v in vals) + tail + "\n")
        out[int(iid)] = lines
    return out


def _image_sources(ds: Dataset) -> list[tuple[Path, str]]:
    """(source path, name) of each image, all checked to exist before anything is written."""
    out = []
    for fn in ds.images["file_name"]:
        src = ds.image_path(str(fn))
        if not src.is_file():
            raise DatasetError(f"{src}: image file not found (pass --images DIR if the images are elsewhere)")
        out.append((src, Path(fn).name))
    return out


def _link_images(sources: list[tuple[Path, str]], folder: Path) -> None:
    """``folder/<name>`` for each image: a hard link to the source file, or a copy across file systems
    (not a symbolic link: the image-path safety check refuses links that lead out of the image root)."""
    import shutil

    from ..atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for src, name in sources:
        dst = folder / name
        if dst.exists() or dst.is_symlink():
            if dst.exists() and os.path.samefile(dst, src):
                continue
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            with atomic_path(dst) as tmp:  # a copy interrupted half-way must not look like an image
                shutil.copyfile(src, tmp)
