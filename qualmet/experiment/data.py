"""An experiment's data: the clean training and test splits (made once), the noise draw(s), the
out-of-fold predictions and the metrics run on the noisy labels.

A :class:`Replicate` is everything one noise draw gives the arms, with each COCO file parsed once.
Without ``[noise] vary`` every seed shares one draw (``out/data``, ``out/oof``, ``out/metrics``);
with it, seed ``k`` trains on its own draw (noise seed ``[noise] seed + k``) in ``out/draws/seed<k>/``,
so a seed is a full replicate of noise, predictions, metrics, selection and training. Each step is
skipped on a rerun when :mod:`qualmet.steps` says its outputs were made from the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import steps
from ..dataset import Dataset
from ..environment import digest
from ..errors import QualmetError
from ..formats import load_coco, load_dataset, save_coco
from ..metric_run import MetricRun
from .spec import Spec, known_metrics

NOISE_STAMP = "noise_step.json"


def log(msg: str) -> None:
    print(msg, flush=True)


class DataFiles(NamedTuple):
    noisy: Path
    test: Path
    manifest: Path | None


@dataclass
class Replicate:
    """One noise draw and what was computed on it, as the arms read it."""

    folder: Path  # its noisy labels, out-of-fold predictions, metrics and label-error report live here
    noise_seed: int | None
    noisy: Dataset
    clean: Dataset  # the same frames with their clean labels
    test: Dataset
    manifest: pd.DataFrame | None
    run: MetricRun

    @property
    def error_frames(self) -> set[int] | None:
        """Frames with at least one injected error (None without a manifest)."""
        return None if self.manifest is None else set(self.manifest["image_id"].astype(int))


def prepare_clean(spec: Spec, out: Path) -> tuple[Path, Path]:
    """Make the clean training split and the clean test split under ``out/data``."""
    d = spec.raw["data"]
    data_dir = out / "data"
    cfg = {"data": d, "libraries": digest()}  # generated frames depend on numpy and OpenCV
    clean, test = data_dir / "train.json", data_dir / "test.json"
    if steps.done(data_dir, cfg, [clean, test]):
        return clean, test
    data_dir.mkdir(parents=True, exist_ok=True)
    if d.get("source", "synthetic") == "synthetic":
        from ..synth import generate

        log(f"generating {d['train']} train + {d['test']} test synthetic frames ({d['size']} px, seed {d['seed']})")
        generate(data_dir, n_train=int(d["train"]), n_test=int(d["test"]), seed=int(d["seed"]), size=d["size"],
                 progress=False)
    else:
        tr, te = _real_splits(spec)
        save_coco(tr, clean)
        save_coco(te, test)
    steps.stamp(data_dir, cfg)
    return clean, test


def _real_splits(spec: Spec) -> tuple[Dataset, Dataset]:
    """A real data set in any supported format, with its test split given or carved out by seed."""
    d = spec.raw["data"]
    base = spec.path.parent if spec.path else Path.cwd()
    src = (base / d["source"]).resolve()
    full = load_dataset(src, fmt=d.get("format", "auto"))
    if d.get("test_source"):
        test_src = (base / d["test_source"]).resolve()
        tr, te = full, load_dataset(test_src, fmt=d.get("format", "auto"))
        have = dict(zip(te.categories["id"].astype(int), te.categories["name"].astype(str)))
        wrong = [(int(i), str(n)) for i, n in zip(tr.categories["id"], tr.categories["name"]) if have.get(int(i)) != str(n)]
        if wrong:  # the models predict the training file's categories; evaluate would refuse them after training
            i, name = wrong[0]
            raise QualmetError(f"{test_src}: its categories differ from those of {src} (first: id {i} {name!r}, which "
                               f"it {'names ' + repr(have[i]) if i in have else 'lacks'}); the test split must use "
                               "the training data's category ids and names")
    else:
        ids = np.sort(full.images["id"].to_numpy())
        rng = np.random.default_rng(int(d.get("seed", 0)))
        test_ids = set(rng.choice(ids, int(round(len(ids) * float(d.get("test_fraction", 0.2)))), replace=False).tolist())
        tr, te = full.subset([i for i in ids if i not in test_ids]), full.subset(sorted(test_ids))
    log(f"{src}: {len(tr.images)} train / {len(te.images)} test frames")
    return tr, te


def noise_config(spec: Spec, noise_seed: int | None) -> dict:
    """What a noise draw depends on: the spec's [noise] table with the draw's own seed."""
    noise = {k: v for k, v in spec.noise.items() if k != "vary"}
    return {**noise, "seed": int(noise.get("seed", 0)) if noise_seed is None else noise_seed}


def prepare_noise(spec: Spec, clean_json: Path, folder: Path, noise_seed: int) -> tuple[Path, Path | None]:
    """Write ``folder/train_noisy.json`` (and ``manifest.json`` when the spec injects noise)."""
    from ..manifest import save_manifest
    from ..noise import corrupt

    noisy, manifest = folder / "train_noisy.json", folder / "manifest.json"
    cfg = {"data": spec.raw["data"], "noise": noise_config(spec, noise_seed), "libraries": digest()}
    if steps.done(folder, cfg, [noisy], name=NOISE_STAMP):
        return noisy, manifest if manifest.exists() else None
    folder.mkdir(parents=True, exist_ok=True)
    clean = load_coco(clean_json)
    if spec.has_noise:
        noisy_ds, man = corrupt(clean, rate=float(spec.noise["rate"]), seed=noise_seed, types=spec.noise.get("types"))
        save_coco(noisy_ds, noisy)
        save_manifest(man, manifest)
        log(f"label noise (seed {noise_seed}): {len(man)} changes at rate {spec.noise['rate']} "
            f"({man['type'].value_counts().to_dict()})")
    else:
        save_coco(clean, noisy)
        manifest.unlink(missing_ok=True)  # an earlier run's noise: these labels have none
    steps.stamp(folder, cfg, name=NOISE_STAMP)
    return noisy, manifest if manifest.exists() else None


def prepare_data(spec: Spec, out: Path) -> DataFiles:
    """Make (noisy train COCO, clean test COCO, noise manifest or None) under ``out/data``: the draw at
    ``[noise] seed``, the one every seed shares unless the noise varies."""
    clean, test = prepare_clean(spec, Path(out))
    noisy, manifest = prepare_noise(spec, clean, Path(out) / "data", int(spec.noise.get("seed", 0)))
    return DataFiles(noisy, test, manifest)


def compute_metrics(spec: Spec, folder: Path, noisy: Path | Dataset, workers: int | None, progress: bool,
                    noise_seed: int | None = None) -> MetricRun:
    """Run the metrics the arms need on the noisy labels into ``folder/metrics`` (out-of-fold
    predictions first, into ``folder/oof``, when a metric needs them)."""
    from ..runner import run_metrics

    ds = noisy if isinstance(noisy, Dataset) else load_coco(noisy)
    reg = known_metrics(spec)
    names = spec.metrics_needed()
    preds = None
    if any("predictions" in reg[m].needs for m in names):
        preds = _oof_predictions(spec, Path(folder), ds, progress, noise_seed)
    log(f"metrics: {', '.join(names)}")
    return run_metrics(ds, predictions=preds, metrics=names, out=Path(folder) / "metrics", workers=workers,
                       progress=progress)


def _oof_predictions(spec: Spec, folder: Path, ds: Dataset, progress: bool, noise_seed: int | None) -> Path:
    p, det = spec.raw["predictions"], spec.raw["detector"]
    oof = folder / "oof" / "preds_oof.json"
    cfg = {"predictions": p, "detector": det, "data": spec.raw["data"], "noise": noise_config(spec, noise_seed),
           "labels": steps.dataset_hash(ds), "libraries": digest()}  # a torch upgrade retrains the fold models
    if not steps.done(folder / "oof", cfg, [oof]):
        from ..detector.crossval import crossval

        log(f"out-of-fold predictions: {p['folds']} folds x {p.get('iters', det['iters'])} iterations")
        crossval(ds, folds=int(p["folds"]), out=oof, work_dir=folder / "oof" / "folds",
                 iters=int(p.get("iters", det["iters"])), seed=0, recipe=det["recipe"], progress=progress,
                 **{k: v for k, v in det.items() if k not in ("recipe", "iters", "val_fraction")})
        steps.stamp(folder / "oof", cfg)
    return oof


def replicate(spec: Spec, out: Path, seed: int, clean_json: Path, test: Dataset, workers: int | None,
              progress: bool) -> Replicate:
    """The noise draw ``seed`` trains on, with its metrics: ``out/data`` shared, or ``out/draws/seed<k>``."""
    from ..manifest import load_manifest

    noise_seed = spec.noise_seed(seed)
    folder = out / "draws" / f"seed{seed}" if spec.vary_noise else out
    noisy_json, manifest = prepare_noise(spec, clean_json, folder if spec.vary_noise else out / "data", noise_seed)
    noisy = load_coco(noisy_json)
    man = load_manifest(manifest) if manifest is not None else None
    if not spec.metrics_needed():  # random and the anchors: selection reads only the boxes per frame
        return Replicate(folder, noise_seed if spec.has_noise else None, noisy, load_coco(clean_json), test, man,
                         boxes_only_run(noisy))
    run = compute_metrics(spec, folder, noisy, workers, progress, noise_seed)
    if manifest is not None:
        from ..label_errors import write_label_error_report

        write_label_error_report(run, manifest, folder / "label_errors")
        if folder != out and seed == spec.seeds[0]:  # the report shows one draw's: the first seed's
            write_label_error_report(run, manifest, out / "label_errors")
    return Replicate(folder, noise_seed if spec.has_noise else None, noisy, load_coco(clean_json), test, man, run)


def boxes_only_run(ds: Dataset) -> MetricRun:
    """A metrics run without metrics: the objects and frames tables, for specs whose arms rank by nothing."""
    objects = pd.DataFrame({"annotation_id": ds.annotations["id"].astype("int64"),
                            "image_id": ds.annotations["image_id"].astype("int64")})
    return MetricRun.from_tables(objects, pd.DataFrame({"image_id": ds.images["id"].astype("int64")}), {})
