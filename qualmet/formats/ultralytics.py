"""Ultralytics' data set layout: a ``data.yaml`` naming the root (``path``), the splits (``train``,
``val``, ``test``: image folders, lists of them, or .txt files listing images) and the class names
(``names``: a list, or a dict from class index to name), with each image's labels found by
Ultralytics' rule: the last ``images`` folder of its path becomes ``labels``, the extension ``.txt``.

A relative ``path`` is taken from data.yaml's folder, and a missing one means that folder (as
Ultralytics does when ``path`` is left out). Without a data.yaml, ``ROOT/images/<split>`` beside
``ROOT/labels/<split>`` is read the same way, the class names coming from ``names``. Each image keeps
its split in the ``split`` column, and ``file_name`` is relative to the root (``images/val/a.jpg``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_text
from ..dataset import Dataset
from ..errors import DatasetError, ImageError, Problem
from ..imageio import image_size
from ._build import build_dataset
from .yolo import IMAGE_EXTS, _image_sources, _label_lines, _link_images, class_index, parse_line

SPLITS = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def _yaml_of(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return path
    return next((path / n for n in YAML_NAMES if (path / n).is_file()), None) if path.is_dir() else None


def is_split_layout(path: str | os.PathLike) -> bool:
    """A data.yaml (or a folder holding one), or ROOT with images/<split> and labels/<split> folders."""
    p = Path(path)
    if _yaml_of(p) is not None:
        return True
    return p.is_dir() and (p / "labels").is_dir() and any(q.is_dir() for q in (p / "labels").iterdir()) \
        and not any((p / "labels").glob("*.txt"))


def _names(raw: object, where: Path) -> list[str]:
    """``names`` as a list in class-index order: a list, or a dict whose keys are exactly 0..n-1."""
    if isinstance(raw, list) and all(isinstance(n, (str, int)) for n in raw):
        names = [str(n) for n in raw]
    elif isinstance(raw, dict):
        try:
            by_index = {int(k): str(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: 'names' keys must be class indices 0, 1, ...; got {list(raw)[:5]}") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise DatasetError(f"{where}: 'names' must number the classes 0..{len(by_index) - 1} without gaps; "
                               f"got {sorted(by_index)[:10]}")
        names = [by_index[k] for k in range(len(by_index))]
    else:
        raise DatasetError(f"{where}: 'names' must be a list of class names or a dict index -> name")
    dup = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if dup is not None:
        raise DatasetError(f"{where}: the class name {dup!r} is given twice; the classes would merge")
    return names


def read_data_yaml(path: str | os.PathLike) -> dict:
    """{"root": Path, "splits": {split: [image folders or list files]}, "names": [...]} from a data.yaml."""
    import yaml

    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{p}: cannot read this YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{p}: expected a mapping with 'names' and the splits (train, val, test)")
    if "names" not in d:
        raise DatasetError(f"{p}: no 'names' (the class names)")
    root = p.parent / str(d["path"]) if d.get("path") else p.parent
    splits = {s: [root / str(x) for x in (d[s] if isinstance(d[s], list) else [d[s]])]
              for s in SPLITS if d.get(s)}
    return {"root": root, "splits": splits, "names": _names(d["names"], p)}


def _label_path(img: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, extension ``.txt``."""
    parts = list(img.parts)
    k = max((i for i, part in enumerate(parts[:-1]) if part == "images"), default=None)
    if k is None:
        return img.with_suffix(".txt")
    parts[k] = "labels"
    return Path(*parts).with_suffix(".txt")


def _split_images(src: Path, split: str, problems: list[Problem]) -> list[Path]:
    """The images of one split entry: a folder (searched below), or a .txt file with one image per line."""
    if src.is_dir():
        return sorted(q for q in src.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file())
    if src.is_file() and src.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [src.parent / ln for ln in lines]  # relative lines are relative to the list's folder
    problems.append(Problem("error", str(src), split, "split folder or image list not found"))
    return []


def _frame(img: Path, root: Path, split: str, names: list[str], where: str, problems: list[Problem]) -> dict | None:
    try:
        w, h = image_size(img)
    except ImageError as exc:
        problems.append(Problem("error", str(img), img.name, str(exc)))
        return None
    lab, objects = _label_path(img), []
    if lab.is_file():
        try:
            text = lab.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem("error", str(lab), img.name, f"cannot read this label file ({exc}); frame skipped"))
            return None
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                obj = parse_line(line, names, w, h, where)
                if isinstance(obj, str):
                    problems.append(Problem("error", str(lab), f"line {n}", obj))
                else:
                    objects.append(obj)
    try:
        name = img.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        problems.append(Problem("error", str(img), img.name, f"image is outside the data set root {root}; skipped"))
        return None
    return {"file_name": name, "width": w, "height": h, "objects": objects, "image_extra": {"split": split}}


def load_ultralytics(path: str | os.PathLike, split: str | None = None,
                     names: str | os.PathLike | list[str] | None = None) -> Dataset:
    """Load an Ultralytics data set: ``path`` is its data.yaml, a folder holding one, or a ROOT with
    images/<split> and labels/<split> (then ``names`` is needed: a data.yaml, a classes.txt, or a list).
    ``split`` loads one split only; by default every split is loaded and named in the ``split`` column.
    An image two splits list is loaded once (the first split names it)."""
    from .yolo import _class_names

    p = Path(path)
    y = _yaml_of(p)
    if y is not None:
        cfg = read_data_yaml(y)
        where = y.name
    elif is_split_layout(p):
        cfg = {"root": p, "splits": {s.name: [s] for s in sorted((p / "images").iterdir()) if s.is_dir()}
               if (p / "images").is_dir() else {}, "names": None}
        where = "the class names"
    else:
        raise DatasetError(f"{p}: neither a data.yaml nor a folder with images/<split> and labels/<split>")
    if names is not None:
        cfg["names"] = list(names) if isinstance(names, list) else _class_names(Path(names))
        where = Path(names).name if not isinstance(names, list) else where
    if cfg["names"] is None:
        raise DatasetError(f"{p}: no data.yaml here to name the classes; pass --names (a data.yaml or classes.txt)")
    if split is not None and split not in cfg["splits"]:
        raise DatasetError(f"{y or p}: no split {split!r}; it has {', '.join(cfg['splits']) or 'none'}")
    problems: list[Problem] = []
    frames, seen = [], set()
    for s, sources in cfg["splits"].items():
        if split is not None and s != split:
            continue
        for src in sources:
            for img in _split_images(src, s, problems):
                if img.resolve() not in seen:
                    seen.add(img.resolve())
                    f = _frame(img, cfg["root"], s, cfg["names"], where, problems)
                    if f is not None:
                        frames.append(f)
    if not frames and not problems:
        raise DatasetError(f"{y or p}: no images found in the splits {', '.join(cfg['splits']) or '(none listed)'}")
    return build_dataset(frames, str(y or p), cfg["root"], problems, class_names=cfg["names"])


def save_ultralytics(ds: Dataset, out_dir: str | os.PathLike, split: str = "train") -> Path:
    """Write ``out_dir`` in Ultralytics' layout: images/<split>/ (hard links or copies of the images),
    labels/<split>/<stem>.txt (boxes, YOLO-seg polygons for objects with one polygon, scores when
    present) and a data.yaml (no ``path``: Ultralytics then takes data.yaml's folder) naming the splits
    and the classes. An image goes to its ``split`` column's split, else to ``split``."""
    import yaml

    out = Path(out_dir)
    index = class_index(ds)
    names = {k: str(n) for k, n in enumerate(ds.categories.sort_values("id")["name"])}
    split_of = ds.images["split"] if "split" in ds.images else [None] * len(ds.images)
    dest: dict[int, tuple[str, str]] = {}
    taken: dict[tuple[str, str], str] = {}
    for iid, fn, s in zip(ds.images["id"], ds.images["file_name"], split_of):
        s = s if isinstance(s, str) and s else split
        key = (s, Path(fn).stem)
        if taken.setdefault(key, fn) != fn:
            raise DatasetError(f"images {taken[key]!r} and {fn!r} would both be labelled by labels/{s}/{key[1]}.txt; "
                               "rename one, or put them in different splits")
        dest[int(iid)] = (s, Path(fn).name)
    for s in {s for s, _ in dest.values()}:
        if (out / "labels" / s).is_dir() and any((out / "labels" / s).iterdir()):
            raise DatasetError(f"{out / 'labels' / s} is not empty; choose an empty folder")
    lines_of = _label_lines(ds, index)
    sources = _image_sources(ds)  # every image checked to exist before anything is written
    for (src, _), iid in zip(sources, ds.images["id"]):
        s, name = dest[int(iid)]
        write_text(out / "labels" / s / f"{Path(name).stem}.txt", "".join(lines_of.get(int(iid), [])))
        _link_images([(src, name)], out / "images" / s)
    splits = sorted({s for s, _ in dest.values()}, key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s))
    doc = {**{s: f"images/{s}" for s in splits}, "names": names}
    write_text(out / "data.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return out
