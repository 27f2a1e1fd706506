"""A metrics run as plain data: the objects and frames tables, each metric's spec, and the one place
where a metric's values are turned into suspicion (higher = more likely a label error) and fences.

Everything downstream of ``qualmet metrics run`` (selection, label-error tables, review, experiments,
the report) takes a :class:`MetricRun` and asks it; nothing else reads ``worse`` or computes fences.
This module needs pandas and json only, so reading a run never imports the registry or the runner.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_json
from .errors import QualmetError

# the id and box columns of the two tables; every other numeric column is a metric
OBJECT_BASE = ["annotation_id", "image_id", "category_id", "x", "y", "w", "h"]
FRAME_BASE = ["image_id", "file_name", "width", "height"]
RUN_FILES = ("run.json", "objects.parquet", "frames.parquet")


@dataclass(frozen=True)
class MetricInfo:
    """What a run records of one metric: enough to read its column without the plugin's code."""

    name: str
    level: str  # "object" or "frame"
    worse: str  # "high" or "low": the suspicious end of the scale
    description: str = ""
    version: str = "1"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MetricInfo":
        worse = d.get("worse", "low")
        if worse not in ("high", "low"):
            raise QualmetError(f"metric {d.get('name')!r}: worse must be 'high' or 'low', got {worse!r}")
        return cls(str(d["name"]), str(d["level"]), worse, str(d.get("description", "")), str(d.get("version", "1")))


def orient(values: pd.Series | np.ndarray, worse: str) -> pd.Series | np.ndarray:
    """Suspicion from metric values: ``values`` when ``worse == "high"``, ``-values`` when "low";
    NaN stays NaN (not defined here, so neither suspicious nor clean)."""
    if worse not in ("high", "low"):
        raise QualmetError(f"'worse' must be 'high' or 'low', got {worse!r}")
    v = values.astype("float64")
    return v if worse == "high" else -v


def fences(values: np.ndarray | pd.Series, k: float = 1.5) -> tuple[float, float] | None:
    """Tukey's fences ``(Q1 - k*IQR, Q3 + k*IQR)`` of the finite values; None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def recorded_image_root(info: dict, dataset_path: str | os.PathLike) -> str | None:
    """The image root a run's run.json records, if the run was computed on ``dataset_path`` (the root
    belongs to that file) and the folder still exists; else None."""
    d = info.get("dataset") or {}
    recorded, root = d.get("path"), d.get("image_root")
    if not recorded or recorded.startswith("<") or not root:
        return None
    same = os.path.abspath(dataset_path) == os.path.abspath(recorded)
    return root if same and Path(root).is_dir() else None


def _read_parquet(p: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a truncated or foreign file
        raise QualmetError(f"{p}: cannot read parquet ({type(exc).__name__}: {exc}); "
                           "run `qualmet metrics run` into this folder again to rewrite it") from None


@dataclass
class MetricRun:
    """One row per object (``objects``), one per frame (``frames``), and the run manifest ``info``
    (run.json), whose ``metrics`` list gives each column's level and ``worse`` side."""

    objects: pd.DataFrame
    frames: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, objects: pd.DataFrame, frames: pd.DataFrame, worse: Mapping[str, str],
                    descriptions: Mapping[str, str] | None = None) -> "MetricRun":
        """A run from hand-built tables: ``worse`` names each metric column's suspicious side."""
        metrics = []
        for name, w in worse.items():
            level = "frame" if name in frames.columns and name not in objects.columns else "object"
            metrics.append({"name": name, "level": level, "worse": w, "description": (descriptions or {}).get(name, "")})
        return cls(objects, frames, {"metrics": metrics, "errors": [], "skipped_frames": []})

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "MetricRun":
        """Read a run folder written by ``qualmet metrics run`` (or :meth:`save`)."""
        d = Path(run_dir)
        missing = [f for f in RUN_FILES if not (d / f).is_file()]
        if missing:
            raise QualmetError(f"{d}: not a metrics run folder (no {', '.join(missing)}); make one with "
                               "`qualmet metrics run`")
        try:
            info = json.loads((d / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise QualmetError(f"{d / 'run.json'}: cannot read JSON ({exc})") from None
        if not isinstance(info, dict):
            raise QualmetError(f"{d / 'run.json'}: expected a JSON object, found {type(info).__name__}")
        return cls(_read_parquet(d / "objects.parquet"), _read_parquet(d / "frames.parquet"), info)

    def save(self, run_dir: str | os.PathLike) -> None:
        """Write the two tables and run.json (with each table's row count and sha256), atomically."""
        from .atomic import sha256_file

        d = Path(run_dir)
        self.info.setdefault("outputs", {})
        for name, df in (("objects.parquet", self.objects), ("frames.parquet", self.frames)):
            with atomic_path(d / name) as tmp:
                df.to_parquet(tmp, index=False)
            self.info["outputs"][name] = {"rows": len(df), "sha256": sha256_file(d / name)}
        write_json(d / "run.json", self.info, indent=2)

    # --- what the run holds
    @property
    def specs(self) -> dict[str, MetricInfo]:
        """Each recorded metric whose column is in its table, by name."""
        out = {}
        for m in self.info.get("metrics", []):
            spec = MetricInfo.from_dict(m)
            if spec.name in (self.objects if spec.level == "object" else self.frames).columns:
                out[spec.name] = spec
        return out

    @property
    def metrics(self) -> list[str]:
        return list(self.specs)

    @property
    def errors(self) -> list[dict]:
        return self.info.get("errors", [])

    @property
    def skipped_frames(self) -> list[dict]:
        return self.info.get("skipped_frames", [])

    @property
    def exit_code(self) -> int:
        """0 when every cell could be computed, 1 when a metric raised or a frame was skipped."""
        return 1 if (self.errors or self.skipped_frames) else 0

    def only(self, names: Iterable[str]) -> "MetricRun":
        """The same run holding only the metrics ``names`` (each checked to be in it)."""
        keep = set(names)
        for m in keep:
            self.spec(m)
        drop = [m for m in self.metrics if m not in keep]
        info = {**self.info, "metrics": [m for m in self.info.get("metrics", []) if m.get("name") not in drop]}
        return MetricRun(self.objects.drop(columns=[c for c in drop if c in self.objects.columns]),
                         self.frames.drop(columns=[c for c in drop if c in self.frames.columns]), info)

    def spec(self, name: str) -> MetricInfo:
        """``name``'s spec; an unknown name is an error listing the run's metrics."""
        specs = self.specs
        if name not in specs:
            import difflib

            close = difflib.get_close_matches(name, specs, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise QualmetError(f"metric {name!r} is not in the metrics run; computed metrics: "
                               f"{', '.join(sorted(specs)) or 'none'}{hint}")
        return specs[name]

    def level(self, name: str) -> str:
        return self.spec(name).level

    def table(self, name: str) -> pd.DataFrame:
        """The table holding ``name``'s column."""
        return self.objects if self.level(name) == "object" else self.frames

    def values(self, name: str) -> pd.Series:
        return self.table(name)[name].astype("float64")

    # --- suspicion: the one place ``worse`` is read
    def suspicion(self, name: str) -> pd.Series:
        """``name``'s values oriented so that higher is more suspicious, row for row with its table."""
        return orient(self.values(name), self.spec(name).worse)

    def frame_suspicion(self, name: str, image_ids: Iterable[int] | None = None, how: str = "max") -> pd.Series:
        """Per frame (indexed by image id, in ``image_ids`` order when given): a frame metric's own
        suspicion, or for an object metric its objects' suspicion combined by ``how`` ("max": the
        worst box; "mean"; "sum": with calibrated suspicion, about the expected wrong boxes). A frame
        with no value (no boxes, or all NaN) is NaN."""
        s = self.suspicion(name)
        if self.level(name) == "object":
            if how not in ("max", "mean", "sum"):
                raise QualmetError(f"frame score {how!r}: choose max, mean or sum")
            g = s.groupby(self.objects["image_id"].to_numpy())
            s = g.sum(min_count=1) if how == "sum" else getattr(g, how)()
        else:
            s = pd.Series(s.to_numpy(), index=self.frames["image_id"].to_numpy())
        s.index = s.index.astype("int64")
        return s if image_ids is None else s.reindex(pd.Index([int(i) for i in image_ids], dtype="int64"))

    def fences(self, name: str, k: float = 1.5) -> tuple[float, float] | None:
        """Tukey's fences of ``name``'s values (see :func:`fences`)."""
        return fences(self.values(name).to_numpy(), k)

    def beyond_fence(self, name: str, k: float = 1.5, rows: pd.Index | None = None) -> pd.Series:
        """True where a value lies beyond the fence on its suspicious side, row for row with its table
        (or with ``rows`` of it, whose own fences are then used)."""
        v = self.values(name)
        if rows is not None:
            v = v.loc[rows]
        f = fences(v.to_numpy(), k)
        if f is None:
            return pd.Series(False, index=v.index)
        return (v > f[1]) if self.spec(name).worse == "high" else (v < f[0])
