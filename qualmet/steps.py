"""Resume: one way to tell whether a step's outputs were made from the same inputs.

A step (an experiment's data, its out-of-fold predictions, one arm, a training) has a configuration:
plain data naming everything its outputs depend on. :func:`fingerprint` hashes it; :func:`stamp`
writes the hash beside the outputs once they are complete; :func:`done` says whether the outputs
exist and carry the same hash, so a rerun skips the step. :func:`dataset_hash` is the one content
hash of a data set's frames and boxes, used wherever a configuration names a data set.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .atomic import write_json

STAMP = "step.json"
_FRAME_COLUMNS = ["id", "file_name", "width", "height"]
_BOX_COLUMNS = ["id", "image_id", "category_id", "x", "y", "w", "h"]


def fingerprint(config: Any) -> str:
    """sha256 (16 hex digits) of ``config`` as canonical JSON (sorted keys; other objects as text)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stamp(folder: str | Path, config: Any, name: str = STAMP) -> None:
    """Record that ``folder``'s outputs are complete and were made from ``config``. Write it last."""
    write_json(Path(folder) / name, {"fingerprint": fingerprint(config), "config": config}, indent=2)


def done(folder: str | Path, config: Any, files: Iterable[str | Path] = (), name: str = STAMP) -> bool:
    """True when ``folder`` holds a stamp for ``config`` and every one of ``files`` exists."""
    p = Path(folder) / name
    if not p.is_file() or not all(Path(f).exists() for f in files):
        return False
    try:
        return json.loads(p.read_text()).get("fingerprint") == fingerprint(config)
    except (OSError, ValueError):  # a damaged stamp: the step is redone
        return False


def _table_hash(df: pd.DataFrame, cols: list[str]) -> bytes:
    t = df[cols].sort_values("id", kind="stable").reset_index(drop=True)
    return pd.util.hash_pandas_object(t, index=False).to_numpy().tobytes() + str(len(t)).encode()


def dataset_hash(ds: Any) -> str:
    """Content hash of a :class:`~qualmet.dataset.Dataset`'s frames (id, file, size) and boxes (id,
    frame, class, box, and ``iscrowd`` where any box is an ignore region), independent of row order:
    two data sets with the same frames and labels share it; any changed box, class, frame or ignore
    region changes it."""
    anns = ds.annotations
    cols = _BOX_COLUMNS + (["iscrowd"] if "iscrowd" in anns.columns and (anns["iscrowd"] != 0).any() else [])
    h = hashlib.sha256(_table_hash(ds.images, _FRAME_COLUMNS))
    h.update(_table_hash(anns, cols))
    return h.hexdigest()[:16]
