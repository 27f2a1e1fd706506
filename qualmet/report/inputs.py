"""Find and load what a report shows: a metrics run (and the data set and noise manifest behind it),
an experiment folder, a model folder with its evaluation. Missing inputs give ``None``, never an error,
so the report simply leaves their sections out; a folder that is there but malformed is an error."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..dataset import Dataset
from ..errors import QualmetError
from ..metric_run import MetricRun

LABEL_ERROR_COLUMNS = ("metric", "level", "type", "positives", "auroc", "ap")  # what the experiment section reads


@dataclass
class MetricInfo:
    """One computed metric as the report needs it: its spec in the run, and its compute time."""

    name: str
    level: str  # "object" or "frame"
    worse: str  # "high" or "low"
    description: str = ""
    seconds: float | None = None


@dataclass
class RunData:
    """A ``qualmet metrics run`` folder, with the data set it was computed on when it can be found."""

    dir: Path
    run: MetricRun
    metrics: list[MetricInfo]
    dataset: Dataset | None = None
    dataset_path: Path | None = None
    notes: list[str] = field(default_factory=list)  # what could not be found, shown in the overview
    manifest: pd.DataFrame | None = None
    manifest_path: Path | None = None

    @property
    def info(self) -> dict[str, Any]:
        return self.run.info

    @property
    def objects(self) -> pd.DataFrame:
        return self.run.objects

    @property
    def frames(self) -> pd.DataFrame:
        return self.run.frames

    @property
    def category_names(self) -> dict[int, str]:
        if self.dataset is not None and len(self.dataset.categories):
            return {int(c): str(n) for c, n in zip(self.dataset.categories["id"], self.dataset.categories["name"])}
        return {}

    @property
    def file_names(self) -> dict[int, str]:
        return dict(zip(self.frames["image_id"].astype(int), self.frames["file_name"].astype(str)))

    def object_error_types(self) -> pd.Series:
        """Per object row: the injected error type (``loose``, ``spurious``, ...) or NaN for a clean box."""
        if self.manifest is None:
            return pd.Series(np.nan, index=self.objects.index, dtype=object)
        m = self.manifest[self.manifest["type"] != "missing"].drop_duplicates("annotation_id")
        kinds = m.set_index(m["annotation_id"].astype("int64"))["type"]
        return self.objects["annotation_id"].map(kinds)

    def frame_error_counts(self) -> pd.Series:
        """Per frame row: how many injected errors (deleted boxes included) the frame holds."""
        if self.manifest is None:
            return pd.Series(0, index=self.frames.index)
        counts = self.manifest["image_id"].astype("int64").value_counts()
        return self.frames["image_id"].map(counts).fillna(0).astype(int)


@dataclass
class ModelData:
    """A ``qualmet train`` folder plus, when found, its ``qualmet evaluate`` folder and a test set."""

    dir: Path
    config: dict[str, Any]
    log: pd.DataFrame | None
    eval_dir: Path | None
    eval_metrics: dict[str, Any] | None
    test_path: Path | None
    predictions_path: Path | None


@dataclass
class ExperimentData:
    """A ``qualmet experiment`` folder."""

    dir: Path
    config: dict[str, Any]
    spec_toml: str | None
    results: pd.DataFrame | None
    summary: pd.DataFrame | None
    summary_md: str | None
    label_errors: pd.DataFrame | None


@dataclass
class ReviewData:
    """A ``qualmet review`` folder: its issues (review.csv, worst first) and what it could not look for."""

    dir: Path
    issues: pd.DataFrame
    notes: list[str] = field(default_factory=list)


REVIEW_COLUMNS = ("rank", "kind", "score", "image_id", "file_name", "annotation_id", "category", "x", "y", "w", "h",
                  "suggested_category", "sx", "sy", "sw", "sh", "suggested_score", "reasons")
MAX_REVIEW_ISSUES = 2000  # the report shows the head of a longer queue (review.csv has it all)


def load_review(review_dir: str | os.PathLike) -> ReviewData:
    """Read a review folder's review.csv (and the notes of its review.md)."""
    d = Path(review_dir)
    if not (d / "review.csv").is_file():
        raise QualmetError(f"{d}: not a review folder (no review.csv); make one with `qualmet review`")
    issues = _read_csv(d / "review.csv", REVIEW_COLUMNS)
    for c in ("kind", "file_name", "category", "suggested_category", "reasons"):
        issues[c] = issues[c].fillna("").astype(str)
    md = _read_text(d / "review.md") or ""
    notes = [ln[len("Note: "):] for ln in md.splitlines() if ln.startswith("Note: ")]
    if len(issues) > MAX_REVIEW_ISSUES:
        notes.append(f"the first {MAX_REVIEW_ISSUES} of {len(issues)} issues are shown; review.csv holds them all")
    return ReviewData(d, issues.head(MAX_REVIEW_ISSUES).reset_index(drop=True), notes)


def _read_json(p: Path) -> dict[str, Any]:
    """A JSON object file (every JSON file a report reads holds one object)."""
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QualmetError(f"{p}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise QualmetError(f"{p}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_text(p: Path) -> str | None:
    if not p.is_file():
        return None
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QualmetError(f"{p}: cannot read it as UTF-8 text ({exc})") from None


def _read_csv(p: Path, required: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """A CSV qualmet wrote, or None when absent; ``required`` columns must be there."""
    if not p.is_file():
        return None
    try:
        # arm names such as "NA" or "None" are names, not missing values
        df = pd.read_csv(p, keep_default_na=False, na_values=[""])
    except Exception as exc:  # pandas raises several types for a bad CSV
        raise QualmetError(f"{p}: cannot read CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise QualmetError(f"{p}: no column(s) {', '.join(missing)}; is it a file qualmet wrote?")
    return df


def _candidates(recorded: str, run_dir: Path) -> list[Path]:
    """Where a data set path recorded in run.json may be now: as written (absolute or relative to
    the current folder), or relative to the run folder and its parents (the run may have been made
    from another working folder, or moved together with its data)."""
    p = Path(recorded)
    out = [p]
    tails = [Path(*p.parts[-k:]) for k in range(1, min(4, len(p.parts)) + 1)]
    for anc in [run_dir, *list(run_dir.parents)[:4]]:
        if not p.is_absolute():
            out.append(anc / p)
        out += [anc / t for t in tails]
    seen, uniq = set(), []
    for c in out:
        key = os.path.abspath(c)
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    return uniq


def _load_dataset(path: Path, images: str | os.PathLike | None, recorded_root: str | None = None) -> Dataset:
    """``images`` if given, else the image root the run recorded (when it still exists), else the
    file's own default (its ``.images`` sidecar, else ``images/`` beside the JSON)."""
    from ..formats import load_coco

    return load_coco(path, images=images if images is not None else recorded_root, on_invalid="skip")


def find_dataset(run_dir: Path, info: dict[str, Any], dataset: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None) -> tuple[Dataset | None, Path | None, list[str]]:
    """The data set a run was computed on: ``dataset`` if given, else the path run.json records,
    checked against the recorded content hash. Returns (data set or None, its path, notes)."""
    from ..metric_run import recorded_image_root
    from ..steps import dataset_hash

    want = (info.get("dataset") or {}).get("hash")
    recorded = (info.get("dataset") or {}).get("path")

    def root_for(p: Path) -> str | None:  # the run's image root applies to the file it was computed on
        return recorded_image_root(info, p)

    if dataset is not None:
        p = Path(dataset)
        if not p.is_file():
            raise QualmetError(f"{p}: data set file not found")
        ds = _load_dataset(p, images, root_for(p))
        notes = [] if dataset_hash(ds) == want else [
            f"{p}: its boxes differ from the ones the metrics were computed on (content hash mismatch); "
            "thumbnails show the run's boxes on this data set's images"]
        return ds, p, notes
    if not recorded or recorded.startswith("<"):
        return None, None, ["the run does not record its data set file; pass --dataset D.json for thumbnails"]
    for c in _candidates(recorded, run_dir):
        if not c.is_file():
            continue
        try:
            ds = _load_dataset(c, images, root_for(c))
        except Exception:  # not the file we want after all; try the next candidate
            continue
        if want is None or dataset_hash(ds) == want:
            return ds, c, []
    return None, None, [f"data set {recorded} (recorded in run.json) not found or changed since the run; "
                        "pass --dataset D.json [--images DIR] for thumbnails"]


def _metric_infos(run: MetricRun) -> list[MetricInfo]:
    """The run's metrics, object level first, each with its compute time from run.json."""
    secs = (run.info.get("timings") or {}).get("seconds_in_workers") or {}
    specs = sorted(run.specs.values(), key=lambda m: m.level != "object")
    return [MetricInfo(m.name, m.level, m.worse, m.description, secs.get(m.name)) for m in specs]


def load_run(run_dir: str | os.PathLike, dataset: str | os.PathLike | None = None,
             images: str | os.PathLike | None = None, manifest: str | os.PathLike | None = None) -> RunData:
    """Read objects.parquet, frames.parquet and run.json; find the data set and (optionally) a manifest."""
    d = Path(run_dir)
    mrun = MetricRun.load(d)
    ds, ds_path, notes = find_dataset(d, mrun.info, dataset, images)
    run = RunData(d, mrun, _metric_infos(mrun), ds, ds_path, notes)
    _attach_manifest(run, manifest)
    return run


def _attach_manifest(run: RunData, manifest: str | os.PathLike | None) -> None:
    """Use ``manifest`` if given (it must match the run's annotation ids), else a ``NOISY.manifest.json``
    beside the data set when it matches."""
    from ..manifest import default_manifest_path, load_manifest

    explicit = manifest is not None
    p = Path(manifest) if explicit else (default_manifest_path(run.dataset_path) if run.dataset_path else None)
    if p is None or not p.is_file():
        if explicit:
            raise QualmetError(f"{p}: manifest file not found")
        return
    m = load_manifest(p)
    changed = m.loc[m["type"] != "missing", "annotation_id"].astype("int64")
    unknown = ~changed.isin(run.objects["annotation_id"])
    if unknown.any():
        if not explicit:
            return
        raise QualmetError(f"{p}: {int(unknown.sum())} of its {len(changed)} changed/added annotation ids "
                           f"(first: {int(changed[unknown].iloc[0])}) are not in the run's objects; "
                           "is it the manifest of this data set?")
    run.manifest, run.manifest_path = m, p


def load_experiment(exp_dir: str | os.PathLike) -> ExperimentData:
    """Read an experiment folder's config, spec, results, summary and label-error table."""
    d = Path(exp_dir)
    if not (d / "config.json").is_file():
        raise QualmetError(f"{d}: not an experiment folder (no config.json); make one with `qualmet experiment`")
    return ExperimentData(d, _read_json(d / "config.json"), _read_text(d / "spec.toml"),
                          _read_csv(d / "results.csv", ("arm", "seed")), _read_csv(d / "summary.csv", ("arm",)),
                          _read_text(d / "summary.md"),
                          _read_csv(d / "label_errors" / "label_errors.csv", LABEL_ERROR_COLUMNS))


def load_model(model_dir: str | os.PathLike, eval_dir: str | os.PathLike | None = None,
               test: str | os.PathLike | None = None, predictions: str | os.PathLike | None = None) -> ModelData:
    """Read a model folder (config.json, train_log.csv) and find its evaluation folder: ``eval_dir``,
    else ``MODEL/eval``, ``MODEL/../eval`` (the experiment layout) or MODEL itself."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise QualmetError(f"{d}: not a model folder (no config.json); train one with `qualmet train`")
    cfg = _read_json(d / "config.json")
    log = _read_csv(d / "train_log.csv")
    if eval_dir is not None:
        ev = Path(eval_dir)
        if not (ev / "metrics.json").is_file():
            raise QualmetError(f"{ev}: not an evaluation folder (no metrics.json); make one with `qualmet evaluate`")
    else:
        ev = next((c for c in (d / "eval", d.parent / "eval", d) if (c / "metrics.json").is_file()), None)
    for name, p in (("test set", test), ("predictions", predictions)):
        if p is not None and not Path(p).is_file():
            raise QualmetError(f"{p}: {name} file not found")
    return ModelData(d, cfg, log, ev, _read_json(ev / "metrics.json") if ev else None,
                     Path(test) if test else None, Path(predictions) if predictions else None)
