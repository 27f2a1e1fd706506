"""YOLO txt folders: one ``<stem>.txt`` per image, lines ``class cx cy w h`` normalised to [0, 1],
with class names one per line in ``classes.txt`` (``obj.names`` is accepted too)."""
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
    if names is not None:
        return Path(names)
    for cand in ("classes.txt", "obj.names"):
        for d in (labels, labels.parent):
            if (d / cand).is_file():
                return d / cand
    raise DatasetError(f"{labels}: no classes.txt or obj.names found; pass the class-names file")


def _label_files(folder: Path, names: str | os.PathLike | None) -> list[Path]:
    """The .txt files of ``folder`` other than a class-names file."""
    skip = {"classes.txt", "obj.names"} if names is None else {Path(names).name}
    return sorted(p for p in folder.glob("*.txt") if p.name not in skip)


def load_yolo(labels: str | os.PathLike, images: str | os.PathLike | None = None,
              names: str | os.PathLike | None = None) -> Dataset:
    """Load a YOLO labels folder; image sizes are read from the image headers in ``images``."""
    lab = Path(labels)
    if not lab.is_dir():
        raise DatasetError(f"{lab}: not a folder of YOLO .txt label files")
    if (lab / "labels").is_dir() and not _label_files(lab, names):  # the usual layout: ROOT/images, ROOT/labels
        lab = lab / "labels"
    img_dir = Path(images) if images is not None else (lab.parent / "images" if (lab.parent / "images").is_dir() else lab)
    names_path = _names_file(lab, names)
    try:
        class_names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{names_path}: not UTF-8 text (byte {exc.start})") from None
    problems: list[Problem] = []
    frames = []
    image_files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS) if img_dir.is_dir() else []
    by_stem = {p.stem: p for p in image_files}
    label_files = _label_files(lab, names_path)
    if not label_files and not image_files:
        raise DatasetError(f"{lab}: no YOLO label (.txt) files and no images in {img_dir}")
    for txt in label_files:
        img = by_stem.get(txt.stem)
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
            if not line.strip():
                continue
            parts = line.split()
            item = f"line {n}"
            if len(parts) != 5:
                problems.append(Problem("error", str(txt), item, f"expected 5 fields 'class cx cy w h', got {len(parts)}"))
                continue
            try:
                cls = int(parts[0])
                vals = [float(v) for v in parts[1:]]
            except ValueError:
                problems.append(Problem("error", str(txt), item, f"non-numeric field in {line.strip()!r}"))
                continue
            if not 0 <= cls < len(class_names):
                problems.append(Problem("error", str(txt), item, f"class {cls} not in {names_path.name} ({len(class_names)} names)"))
                continue
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
                problems.append(Problem("error", str(txt), item, f"normalised values must lie in [0, 1], got {vals}"))
                continue
            x, y, bw, bh = yolo_to_xywh(vals, w, h)[0]
            objects.append((class_names[cls], float(x), float(y), float(bw), float(bh)))
        frames.append({"file_name": img.name, "width": w, "height": h, "objects": objects})
    for img in image_files:  # images with no label file are images with no boxes
        if not (lab / f"{img.stem}.txt").exists():
            try:
                w, h = image_size(img)
            except ImageError as exc:
                problems.append(Problem("error", str(img), img.name, str(exc)))
                continue
            frames.append({"file_name": img.name, "width": w, "height": h, "objects": []})
    return build_dataset(frames, str(lab), img_dir, problems, class_names=class_names)


def save_yolo(ds: Dataset, out_dir: str | os.PathLike, image_ids=None, link_images: bool = False) -> Path:
    """Write ``labels/<stem>.txt`` for each image (of ``image_ids`` if given) and ``classes.txt``;
    with ``link_images``, also ``images/<name>`` linking to each source image, so the folder loads
    back as a YOLO data set.

    Class index k is the k-th category in id order; values are written with 10 decimals. A class name
    that is empty or holds a line break raises DatasetError (classes.txt is one name per line; leading
    and trailing spaces are stripped on loading)."""
    out = Path(out_dir)
    sub = ds.subset(image_ids) if image_ids is not None else ds
    cats = ds.categories.sort_values("id")
    index = {int(c): k for k, c in enumerate(cats["id"])}
    for cid, name in zip(cats["id"], cats["name"]):  # classes.txt is one name per line, read back stripped
        if not isinstance(name, str) or not name.strip() or any(ch in name for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise DatasetError(f"category {int(cid)}: name {name!r} cannot be written to a YOLO classes.txt "
                               "(empty, or contains a line break)")
    stems: dict[str, str] = {}
    for fn in sub.images["file_name"]:  # labels/<stem>.txt: two images with one stem would share a file
        other = stems.setdefault(Path(fn).stem, fn)
        if other != fn:
            raise DatasetError(f"images {other!r} and {fn!r} have the same name stem; YOLO label files are "
                               "named by stem, so they cannot both be written")
    write_text(out / "classes.txt", "".join(f"{n}\n" for n in cats["name"]))
    groups = {int(k): g for k, g in sub.annotations.groupby("image_id")}
    for im in sub.images.itertuples(index=False):
        g = groups.get(int(im.id))
        lines = []
        if g is not None and len(g):
            yb = xywh_to_yolo(g[["x", "y", "w", "h"]].to_numpy(), im.width, im.height)
            for c, row in zip(g["category_id"], yb):
                lines.append(f"{index[int(c)]} " + " ".join(f"{v:.10f}" for v in np.asarray(row)) + "\n")
        write_text(out / "labels" / f"{Path(im.file_name).stem}.txt", "".join(lines))
    if link_images:
        _link_images(sub, out / "images")
    return out


def _link_images(ds: Dataset, folder: Path) -> None:
    """``folder/<name>`` for each image: a hard link to the source file, or a copy across file systems
    (not a symbolic link: the image-path safety check refuses links that lead out of the image root)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for fn in ds.images["file_name"]:
        src = ds.image_path(str(fn))
        dst = folder / Path(fn).name
        if dst.exists() or dst.is_symlink():
            if dst.exists() and os.path.samefile(dst, src):
                continue
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
