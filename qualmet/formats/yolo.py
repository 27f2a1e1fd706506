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
    """One name per line; blank lines at the end are ignored, a blank line before a name is an error
    (it would shift the class index of every name after it)."""
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


def load_yolo(labels: str | os.PathLike, images: str | os.PathLike | None = None,
              names: str | os.PathLike | None = None) -> Dataset:
    """Load a YOLO labels folder; image sizes are read from the image headers in ``images``."""
    lab = Path(labels)
    if not lab.is_dir():
        raise DatasetError(f"{lab}: not a folder of YOLO .txt label files")
    if (lab / "labels").is_dir() and not _label_files(lab, Path(names) if names else None):  # ROOT/images, ROOT/labels
        lab = lab / "labels"
    img_dir = Path(images) if images is not None else (lab.parent / "images" if (lab.parent / "images").is_dir() else lab)
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
    index = {int(c): k for k, c in enumerate(cats["id"])}
    seen: dict[str, int] = {}
    for cid, name in zip(cats["id"], cats["name"]):  # classes.txt is one name per line, read back stripped
        if not isinstance(name, str) or not name.strip() or any(ch in name for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise DatasetError(f"category {int(cid)}: name {name!r} cannot be written to a YOLO classes.txt "
                               "(empty, or contains a line break)")
        if seen.setdefault(name.strip(), int(cid)) != int(cid):
            raise DatasetError(f"categories {seen[name.strip()]} and {int(cid)} are both named {name.strip()!r}; "
                               "YOLO names classes by line, so they would load back as one")
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


def _label_lines(ds: Dataset, index: dict[int, int]) -> dict[int, list[str]]:
    """Per image id, its YOLO label lines, boxes clipped to the image."""
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
        out[int(iid)] = [f"{index[int(c)]} " + " ".join(f"{v:.10f}" for v in row) + "\n"
                         for c, row in zip(g["category_id"], xywh_to_yolo(boxes, W, H))]
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
