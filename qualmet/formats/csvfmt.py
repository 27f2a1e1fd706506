"""CSV in the raccoon layout: ``filename,width,height,class,xmin,ymin,xmax,ymax``, one row per box."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..dataset import Dataset
from ..errors import DatasetError, Problem
from ._build import build_dataset

CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]


def load_csv(path: str | os.PathLike, images: str | os.PathLike | None = None) -> Dataset:
    """Load a box-per-row CSV; a row with a missing or non-numeric value is skipped with its line number."""
    p = Path(path)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: malformed CSV ({str(exc).strip()})") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{p}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    problems: list[Problem] = []
    frames: dict[str, dict] = {}
    for n, r in enumerate(df.to_dict("records"), start=2):  # line 1 is the header
        fname = r["filename"].strip()
        try:
            w, h = int(float(r["width"])), int(float(r["height"]))
            x1, y1, x2, y2 = (float(r[c]) for c in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.append(Problem("error", str(p), f"line {n} ({fname})", "width/height/xmin/ymin/xmax/ymax must be numbers"))
            continue
        if not fname or not r["class"].strip():
            problems.append(Problem("error", str(p), f"line {n}", "filename and class must not be empty"))
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.append(Problem("error", str(p), f"line {n} ({fname})", "box has a NaN or infinite coordinate"))
            continue
        f = frames.setdefault(fname, {"file_name": fname, "width": w, "height": h, "objects": []})
        if (f["width"], f["height"]) != (w, h):
            problems.append(Problem("error", str(p), f"line {n} ({fname})",
                                    f"size {w}x{h} disagrees with an earlier row's {f['width']}x{f['height']}"))
            continue
        f["objects"].append((r["class"].strip(), x1, y1, x2 - x1, y2 - y1))
    root = Path(images) if images is not None else _guess_root(p)
    return build_dataset(list(frames.values()), str(p), root, problems)


def _guess_root(p: Path) -> Path:
    for cand in (p.parent / "images", p.parent.parent / "images"):
        if cand.is_dir():
            return cand
    return p.parent
