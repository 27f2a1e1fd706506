"""CSV in the raccoon layout: ``filename,width,height,class,xmin,ymin,xmax,ymax``, one row per box."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ..dataset import Dataset
from ..errors import DatasetError, Problem
from ._build import build_dataset, parse_size

CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]


def load_csv(path: str | os.PathLike, images: str | os.PathLike | None = None) -> Dataset:
    """Load a box-per-row CSV; a row with a missing or non-numeric value is skipped with its line number."""
    p = Path(path)
    header, rows = _read_rows(p)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{p}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    problems: list[Problem] = []
    frames: dict[str, dict] = {}
    for n, fields in rows:
        if len(fields) < len(header) or any(f.strip() for f in fields[len(header):]):
            problems.append(Problem("error", str(p), f"line {n}", f"{len(fields)} fields, the header has {len(header)}"))
            continue
        r = dict(zip(header, fields))
        fname = r["filename"].strip()
        try:
            x1, y1, x2, y2 = (float(r[c]) for c in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.append(Problem("error", str(p), f"line {n} ({fname})", "xmin/ymin/xmax/ymax must be numbers"))
            continue
        wh = parse_size(r["width"], r["height"])
        if isinstance(wh, str):
            problems.append(Problem("error", str(p), f"line {n} ({fname})", wh))
            continue
        w, h = wh
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


def _read_rows(p: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of each non-blank row. Empty fields after the last
    column (a trailing comma on every row, as some exporters write) are allowed."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            table = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{p}: malformed CSV ({exc})") from None
    table = [(n, row) for n, row in table if any(f.strip() for f in row)]
    if not table:
        raise DatasetError(f"{p}: file is empty")
    header = [h.strip() for h in table[0][1]]
    while header and not header[-1]:
        header.pop()
    return header, table[1:]


def _guess_root(p: Path) -> Path:
    for cand in (p.parent / "images", p.parent.parent / "images"):
        if cand.is_dir():
            return cand
    return p.parent
