"""The two output tables of a metric run (one row per object, one per frame), filled in place as
chunk results arrive."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .compute import PARTIAL
from .metric_run import FRAME_BASE, OBJECT_BASE
from .plugin import MetricSpec



class Tables:
    """The output columns, allocated once and filled in place as each chunk's results arrive (from
    a worker or the cache), so a run holds its final tables and never every chunk's partial tables.

    Scalar metrics are float64 columns (NaN until filled); a ``finalize`` metric's per-object
    vectors go into one (n_objects, k) float64 matrix, allocated when the first vector arrives.
    """

    def __init__(self, images_df: pd.DataFrame, anns: pd.DataFrame, per_frame: list[MetricSpec]):
        self.image_ids = images_df["id"].to_numpy()
        self.ann_ids = anns["id"].to_numpy()
        n_obj, n_frm = len(anns), len(images_df)
        self.obj = {s.name: np.full(n_obj, np.nan) for s in per_frame if s.level == "object" and not s.finalize}
        self.frm = {s.name: np.full(n_frm, np.nan) for s in per_frame if s.level == "frame"}
        self.partial: dict[str, np.ndarray | None] = {s.name: None for s in per_frame if s.finalize}
        self.partial_error: dict[str, Exception] = {}

    @staticmethod
    def _positions(got: np.ndarray, expected_ids: np.ndarray, expected_rows: np.ndarray) -> np.ndarray:
        """Table rows of a chunk's result rows: the chunk's own rows when ids line up (always, for
        results written by this runner), else matched by id (rows with an unknown id are dropped: -1)."""
        if len(got) == len(expected_ids) and np.array_equal(got, expected_ids):
            return expected_rows
        where = dict(zip(expected_ids.tolist(), expected_rows.tolist()))
        return np.array([where.get(i, -1) for i in got.tolist()], dtype=np.int64)

    def put(self, o: pd.DataFrame, f: pd.DataFrame, ann_rows: np.ndarray, frame_rows: slice) -> None:
        """Copy one chunk's object rows ``o`` and frame rows ``f`` into the output columns."""
        fr = np.arange(frame_rows.start, frame_rows.stop)
        pos = self._positions(f["image_id"].to_numpy(), self.image_ids[fr], fr)
        keep = pos >= 0
        for c in f.columns:
            if c in self.frm:
                self.frm[c][pos[keep]] = f[c].astype("float64").to_numpy()[keep]
        pos = self._positions(o["annotation_id"].to_numpy(), self.ann_ids[ann_rows], ann_rows)
        keep = pos >= 0
        for c in o.columns:
            if c in self.obj:
                self.obj[c][pos[keep]] = o[c].astype("float64").to_numpy()[keep]
            elif c.startswith(PARTIAL) and c[len(PARTIAL):] in self.partial:
                self._put_partial(c[len(PARTIAL):], pos, o[c].to_numpy())

    def _put_partial(self, name: str, pos: np.ndarray, vecs: np.ndarray) -> None:
        if name in self.partial_error:
            return
        for r, v in zip(pos.tolist(), vecs):
            if r < 0 or v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            v = np.asarray(v, dtype=np.float64)
            if self.partial[name] is None:
                self.partial[name] = np.full((len(self.ann_ids), len(v)), np.nan)
            try:
                self.partial[name][r] = v
            except ValueError as exc:  # vectors of different lengths: reported when finalizing
                self.partial_error[name] = exc
                return

    def partials(self, name: str) -> np.ndarray:
        """The (n_objects, k) matrix of ``name``'s per-object vectors (NaN rows where none came)."""
        if name in self.partial_error:
            raise self.partial_error[name]
        mat = self.partial.get(name)
        return np.full((len(self.ann_ids), 0), np.nan) if mat is None else mat

    def objects(self, anns: pd.DataFrame) -> pd.DataFrame:
        out = anns[["id"] + OBJECT_BASE[1:]].rename(columns={"id": "annotation_id"})
        out = out.reset_index(drop=True)
        for c, v in self.obj.items():
            out[c] = v
        return out

    def frames(self, images_df: pd.DataFrame) -> pd.DataFrame:
        out = images_df[["id"] + FRAME_BASE[1:]].rename(columns={"id": "image_id"}).reset_index(drop=True)
        for c, v in self.frm.items():
            out[c] = v
        return out

