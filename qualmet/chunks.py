"""How a metric run is cut into chunks, and how finished chunks are keyed and cached on disk.

A chunk is a range of image ids (:func:`chunk_bounds`); :class:`ChunkPlan` finds each chunk's rows
of the images, annotations and predictions tables. A (chunk, metric) pair's cache key hashes what
its values depend on; each finished chunk is one parquet file under ``RUN_DIR/chunks/`` whose
metadata lists the keys it holds (:func:`read_index`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .errors import ImageError
from .metric_run import FRAME_BASE
from .paths import safe_join


def hash_df(df: pd.DataFrame | None, cols: list[str]) -> str:
    h = hashlib.sha256()
    if df is not None and len(df):
        h.update(pd.util.hash_pandas_object(df[cols].reset_index(drop=True), index=False).to_numpy().tobytes())
    h.update(str(0 if df is None else len(df)).encode())
    return h.hexdigest()[:16]


def hash_table(df: pd.DataFrame) -> str:
    """Hash of a table as plugins see it: every column (for annotations, extra COCO keys such as
    iscrowd or attributes; for images, extra keys a vectorised metric may read), so a change to any
    of them recomputes. Numeric columns hash as their bytes, object columns (lists, dicts:
    segmentation, attributes) through pickle: several times faster than row hashes or JSON text."""
    import pickle

    h = hashlib.sha256(json.dumps([(c, str(df[c].dtype)) for c in df.columns]).encode())
    for c in df.columns:
        col = df[c]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
        elif col.dtype == object:
            h.update(pickle.dumps(col.tolist(), protocol=4))
        else:  # strings, nullable integers and other extension types
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]



def cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def file_stamp(root: str | None, name: str, path_cache: dict | None = None) -> str:
    if root is None:
        return "noroot"
    try:
        st = os.stat(safe_join(root, name, cache=path_cache))
        return f"{st.st_size}:{st.st_mtime_ns}"
    except (OSError, ImageError):
        return "missing"


def read_index(chunk_dir: Path) -> dict[str, Path]:
    """Metric-chunk key -> chunk file holding it, from each file's parquet metadata."""
    import pyarrow.parquet as pq

    index: dict[str, Path] = {}
    if not chunk_dir.is_dir():
        return index
    for f in sorted(chunk_dir.glob("*.parquet")):
        try:
            meta = json.loads(pq.read_schema(f).metadata[b"qualmet"])
        except Exception:  # a foreign or damaged file is ignored (and recomputed)
            continue
        for key in meta["keys"].values():
            index[key] = f
    return index


def write_chunk(path: Path, objects: pd.DataFrame, frames: pd.DataFrame, meta: dict) -> None:
    """One parquet file per finished chunk: object rows and frame rows, with metadata, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    o = objects.copy()
    o.insert(0, "_kind", "object")
    f = frames.copy()
    f.insert(0, "_kind", "frame")
    table = pa.Table.from_pandas(pd.concat([o, f], ignore_index=True, sort=False), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"qualmet": json.dumps(meta, allow_nan=False).encode()})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_chunk(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"qualmet"])
    df = table.to_pandas()
    o = df[df["_kind"] == "object"].drop(columns="_kind")
    f = df[df["_kind"] == "frame"].drop(columns="_kind")
    return o, f, meta



def chunk_bounds(ids: np.ndarray, size: int) -> np.ndarray:
    """Row starts of the chunks, then the row count, for image ids sorted ascending.

    A chunk is a range of image ids, not of rows: ``width`` ids, where ``width`` is ``size`` times the
    data set's typical id spacing rounded to a power of two (``size`` itself for ids 1..N). Adding
    or removing a frame then changes its own chunk only, where row ranges would shift every later
    chunk and recompute them all. A range that holds more than ``2 * size`` frames (a dense cluster
    of ids) is cut into pieces of ``size`` rows."""
    n = len(ids)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    spacing = max(1.0, (int(ids[-1]) - int(ids[0]) + 1) / n)
    width = size * 2 ** min(round(math.log2(spacing)), 62 - math.ceil(math.log2(size + 1)))  # stays an int64
    group = (ids.astype(np.int64) - 1) // width  # COCO ids start at 1: with width 32, ids 1-32, 33-64, ...
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rows: list[int] = []
    for a, b in zip(starts, np.r_[starts[1:], n]):
        rows.extend(range(int(a), int(b), size) if b - a > 2 * size else [int(a)])
    return np.asarray(rows + [n], dtype=np.int64)


class ChunkPlan:
    """Which rows of the images, annotations and predictions tables chunk ``ci`` covers.

    Rows are found by position (one stable sort by image id, then binary search), so planning a run
    makes no per-image or per-chunk copies of the tables; a chunk's rows are sliced out when needed.
    Within a chunk, annotations (and predictions) come frame by frame, each frame's in table order.
    """

    def __init__(self, images_df: pd.DataFrame, anns: pd.DataFrame, preds: pd.DataFrame | None, chunk_size: int):
        self.images = images_df  # sorted by id
        self.size = max(1, int(chunk_size))
        self.image_ids = images_df["id"].to_numpy()
        self.bounds = chunk_bounds(self.image_ids, self.size)
        self.anns = anns
        self._a_order, self._a_ids = self._by_image(anns)
        self.preds = preds
        self._p_order, self._p_ids = self._by_image(preds) if preds is not None else (None, None)

    @staticmethod
    def _by_image(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        ids = df["image_id"].to_numpy()
        order = np.argsort(ids, kind="stable")
        return order, ids[order]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def frame_rows(self, ci: int) -> slice:
        return slice(int(self.bounds[ci]), int(self.bounds[ci + 1]))

    def n_frames(self, ci: int) -> int:
        r = self.frame_rows(ci)
        return r.stop - r.start

    def records(self, ci: int) -> list[dict]:
        """The chunk's frames as dicts (file_name, width, height, image_id), the form its cache key hashes."""
        rows = self.frame_rows(ci)
        cols = [self.images[c].iloc[rows].tolist() for c in FRAME_BASE[1:] + ["id"]]  # native Python values
        keys = FRAME_BASE[1:] + ["image_id"]
        return [dict(zip(keys, vals)) for vals in zip(*cols)]

    def _rows(self, order: np.ndarray, sorted_ids: np.ndarray, ci: int) -> np.ndarray:
        ids = self.image_ids[self.frame_rows(ci)]
        lo = np.searchsorted(sorted_ids, ids, "left")
        hi = np.searchsorted(sorted_ids, ids, "right")
        if not (hi > lo).any():
            return np.empty(0, dtype=np.int64)
        return order[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])]

    def annotation_rows(self, ci: int) -> np.ndarray:
        """Positions in the annotations table of this chunk's annotations, in chunk order."""
        return self._rows(self._a_order, self._a_ids, ci)

    def annotations(self, ci: int) -> pd.DataFrame:
        return self.anns.iloc[self.annotation_rows(ci)]

    def predictions(self, ci: int) -> pd.DataFrame | None:
        if self.preds is None:
            return None
        return self.preds.iloc[self._rows(self._p_order, self._p_ids, ci)]

