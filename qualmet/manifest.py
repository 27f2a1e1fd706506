"""The noise manifest format: one row per injected label error, the columns it has, reading and writing
it (JSON list of records, or CSV), and checking it against the data set it describes.

``qualmet.noise`` writes manifests (``corrupt``) and replays or undoes them (``apply``, ``restore``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import atomic
from .dataset import Dataset, is_int64
from .errors import QualmetError

# the values of the ``type`` column: the error types ``qualmet.noise`` injects
ERROR_TYPES = ("loose", "shift", "squash", "spurious", "missing", "duplicate", "wrong_class")

ORIG = ["orig_x", "orig_y", "orig_w", "orig_h"]
NEW = ["new_x", "new_y", "new_w", "new_h"]
MANIFEST_COLUMNS = (["annotation_id", "image_id", "type"] + ORIG + NEW + ["orig_category_id", "new_category_id"]
                    # extras needed for an exact round trip: the duplicated box, the true area/iscrowd,
                    # and any extra COCO keys (segmentation, ...) of a deleted box
                    + ["source_id", "orig_area", "orig_iscrowd", "orig_extra"])
_FLOAT_COLS = ORIG + NEW + ["orig_category_id", "new_category_id", "source_id", "orig_area", "orig_iscrowd"]


def save_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest atomically: a JSON list of records (NaN as null), or CSV when the path ends in ``.csv``
    (empty cells for NaN, ``orig_extra`` as JSON text); both read back exactly with ``load_manifest``."""
    m = _manifest_frame(df)
    if Path(path).suffix.lower() == ".csv":
        out = m.copy()
        out["orig_extra"] = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else "" for v in out["orig_extra"]]
        return atomic.write_text(path, out.to_csv(index=False, lineterminator="\n"))
    recs = []
    for r in m.to_dict("records"):
        out = {}
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, np.floating):
                v = float(v)
            out[k] = v
        recs.append(out)
    return atomic.write_json(path, recs)


def manifest_mismatch(ds: Dataset, manifest: pd.DataFrame) -> str | None:
    """None when ``manifest`` describes ``ds`` (the noisy data set it was written with), else the first
    record that does not fit: a deleted box still there, or a changed or added box whose id or box differs."""
    anns = ds.annotations.set_index("id")
    for r in manifest.itertuples(index=False):
        aid = int(r.annotation_id)
        if r.type == "missing":
            if aid in anns.index:
                return f"annotation {aid} is deleted in the manifest ('missing') but present in the data set"
            continue
        if aid not in anns.index:
            return f"annotation {aid} ({r.type}) is not in the data set"
        a = anns.loc[aid]
        if int(a["image_id"]) != int(r.image_id):
            return f"annotation {aid} is on image {int(a['image_id'])}, the manifest says image {int(r.image_id)}"
        new = [getattr(r, c, None) for c in ("new_x", "new_y", "new_w", "new_h")]
        if all(v is not None and v == v for v in new) and not np.allclose(new, a[["x", "y", "w", "h"]].to_numpy(float), atol=0.01):
            return (f"annotation {aid} ({r.type}) has box {a[['x', 'y', 'w', 'h']].round(2).tolist()}, "
                    f"the manifest says {[round(float(v), 2) for v in new]}")
    return None


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by ``save_manifest`` (JSON, or CSV by the ``.csv`` extension)."""
    p = Path(path)
    if not p.is_file():
        raise QualmetError(f"{p}: manifest file not found")
    if p.suffix.lower() == ".csv":
        recs = _read_csv_manifest(p)
    else:
        try:
            recs = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QualmetError(f"{p}: not a JSON manifest ({exc})") from None
    if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
        raise QualmetError(f"{p}: a manifest must be a JSON list of records")
    for n, r in enumerate(recs):
        missing = [c for c in ("annotation_id", "image_id", "type") if r.get(c) is None]
        if missing or r["type"] not in ERROR_TYPES:
            raise QualmetError(f"{p}: record [{n}]: needs annotation_id, image_id and a type in {', '.join(ERROR_TYPES)}")
        if r["type"] == "missing":  # a deleted box is only known by what the manifest kept of it
            gone = [c for c in ("orig_x", "orig_y", "orig_w", "orig_h", "orig_category_id")
                    if not isinstance(r.get(c), (int, float)) or isinstance(r.get(c), bool) or not math.isfinite(r[c])]
            if gone:
                raise QualmetError(f"{p}: record [{n}] (annotation {r['annotation_id']}, missing): no {', '.join(gone)}; "
                                   "a deleted box needs its original box and category")
    frame = _manifest_frame(recs)
    frame.attrs["source"] = str(p)  # so a later check can name the file
    return frame


def _read_csv_manifest(p: Path) -> list[dict[str, Any]]:
    """CSV manifest rows as records: empty cell -> None, numbers parsed exactly, orig_extra from JSON text."""
    import csv
    import io

    try:
        rows = list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise QualmetError(f"{p}: not a CSV manifest ({exc})") from None
    recs = []
    for n, row in enumerate(rows):
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if k is None or v is None or v == "":
                continue
            try:
                if k in ("annotation_id", "image_id"):
                    rec[k] = int(float(v))
                elif k in _FLOAT_COLS:
                    rec[k] = float(v)
                elif k == "orig_extra":
                    rec[k] = json.loads(v)
                else:
                    rec[k] = v
            except (ValueError, json.JSONDecodeError):
                raise QualmetError(f"{p}: row {n + 2}: column {k} has an unreadable value {v[:40]!r}") from None
        recs.append(rec)
    return recs


def count_by_type(manifest: pd.DataFrame) -> dict[str, int]:
    """Number of errors of each type, every type listed (0 when absent)."""
    vc = manifest["type"].value_counts() if len(manifest) else {}
    return {t: int(vc.get(t, 0)) for t in ERROR_TYPES}


def _manifest_frame(rows: Any) -> pd.DataFrame:
    """A manifest DataFrame with every column, in order, with fixed dtypes, sorted by annotation id."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for c in MANIFEST_COLUMNS:
        if c not in df:
            df[c] = None if c in ("type", "orig_extra") else math.nan
    df = df[MANIFEST_COLUMNS + [c for c in df.columns if c not in MANIFEST_COLUMNS]]
    for c in ("annotation_id", "image_id"):
        df[c] = _int_column(df[c], c)
    df["type"] = df["type"].astype(object)
    for c in _FLOAT_COLS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["orig_extra"] = [v if isinstance(v, dict) and v else None for v in df["orig_extra"]]
    return df.sort_values("annotation_id", kind="stable").reset_index(drop=True)


def _int_column(col: pd.Series, name: str) -> pd.Series:
    """A manifest id column as int64; a value that is not a whole number is an error naming its row."""
    def whole(v: Any) -> bool:  # an integer, or a float holding one (CSV manifests, pandas columns)
        if isinstance(v, (float, np.floating)):
            return math.isfinite(v) and v == int(v) and abs(v) < 2 ** 63
        return is_int64(v)

    bad = [i for i, v in enumerate(col) if not whole(v)]
    if bad:
        raise QualmetError(f"manifest row {bad[0]}: {name} must be an integer, got {col.iloc[bad[0]]!r}")
    return col.astype("int64")


def default_manifest_path(noisy_json: str | os.PathLike) -> Path:
    """``NOISY.manifest.json`` beside the noisy JSON."""
    p = Path(noisy_json)
    return p.with_name(p.stem + ".manifest.json")
