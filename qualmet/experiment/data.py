"""An experiment's data: the clean training and test splits (made once), the noise draw(s), the
out-of-fold predictions and the metrics run on the noisy labels.

A :class:`Replicate` is everything one noise draw gives the arms, with each COCO file parsed once.
Without ``[noise] vary`` every seed shares one draw (``out/data``, ``out/oof``, ``out/metrics``);
with it, seed ``k`` trains on its own draw (noise seed ``[noise] seed + k``) in ``out/draws/seed<k>/``,
so a seed is a full replicate of noise, predictions, metrics, selection and training. Each step is
skipped on a rerun when :mod:`qualmet.steps` says its outputs were made from the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import steps
from ..dataset import Dataset
from ..environment import digest
from ..errors import QualmetError
from ..formats import load_coco, load_dataset, save_coco
from ..log import logger
from ..metric_run import MetricRun
from .spec import Spec, known_metrics

NOISE_STAMP = "noise_step.json"


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
    also_test: dict[str, Dataset] = field(default_factory=dict)  # [data.also_test]: the test frames, other labels
    predictions: pd.DataFrame | None = None  # out-of-fold predictions on ``noisy``, when an arm adds them

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
    also = [also_test_path(out, n) for n in spec.also_test]
    if steps.done(data_dir, cfg, [clean, test, *also]):
        return clean, test
    data_dir.mkdir(parents=True, exist_ok=True)
    if d.get("source", "synthetic") == "synthetic":
        from ..synth import generate

        logger.info(f"generating {d['train']} train + {d['test']} test synthetic frames ({d['size']} px, seed {d['seed']})")
        generate(data_dir, n_train=int(d["train"]), n_test=int(d["test"]), seed=int(d["seed"]), size=d["size"],
                 progress=False)
    else:
        tr, te = _real_splits(spec)
        for name, ds in _also_test(spec, te, tr).items():
            save_coco(ds, also_test_path(out, name))
        save_coco(tr, clean)
        save_coco(te, test)
    steps.stamp(data_dir, cfg)
    return clean, test


def _real_splits(spec: Spec) -> tuple[Dataset, Dataset]:
    """A real data set in any supported format, with its test split given or carved out by seed; ``images``
    and ``test_images`` name the image folders, ``train_list`` the frames (file stems) the pool keeps."""
    d = spec.raw["data"]
    base = _base(spec)
    src = (base / d["source"]).resolve()
    full = load_dataset(src, fmt=d.get("format", "auto"), images=_opt_path(base, d.get("images")))
    if d.get("train_list"):
        full = _keep_listed(full, (base / d["train_list"]).resolve())
    if d.get("test_source"):
        test_src = (base / d["test_source"]).resolve()
        tr = full
        te = load_dataset(test_src, fmt=d.get("format", "auto"), images=_opt_path(base, d.get("test_images")))
        te = align_categories(tr, te, src, test_src, "the test split")
        both = sorted(set(tr.images["file_name"].astype(str)) & set(te.images["file_name"].astype(str)))
        if both:  # a test frame trained on scores the model on what it has seen
            raise QualmetError(f"{test_src}: {len(both)} test frame(s) are also in the training data {src} (first: "
                               f"{both[0]}); give [data] train_list to keep only the training frames")
    else:
        ids = np.sort(full.images["id"].to_numpy())
        rng = np.random.default_rng(int(d.get("seed", 0)))
        test_ids = set(rng.choice(ids, int(round(len(ids) * float(d.get("test_fraction", 0.2)))), replace=False).tolist())
        tr, te = full.subset([i for i in ids if i not in test_ids]), full.subset(sorted(test_ids))
    logger.info(f"{src}: {len(tr.images)} train / {len(te.images)} test frames")
    return tr, te


def _base(spec: Spec) -> Path:
    return spec.path.parent if spec.path else Path.cwd()


def _opt_path(base: Path, rel: str | None) -> Path | None:
    return (base / rel).resolve() if rel else None


def _keep_listed(ds: Dataset, list_file: Path) -> Dataset:
    """``ds`` restricted to the frames whose file stem ``list_file`` lists (one a line)."""
    try:
        stems = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as exc:
        raise QualmetError(f"{list_file}: cannot read the train_list ({exc.strerror or exc})") from None
    by_stem = {Path(f).stem: int(i) for i, f in zip(ds.images["id"], ds.images["file_name"].astype(str))}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise QualmetError(f"{list_file}: {len(missing)} listed frame(s) are not in {ds.source} (first: {missing[0]})")
    return ds.subset(sorted({by_stem[s] for s in stems}))


def align_categories(tr: Dataset, te: Dataset, src: Path, test_src: Path, what: str) -> Dataset:
    """``te`` with ``tr``'s category ids and table, matched by name: the models predict the training
    file's categories. Loaders number the classes a folder names (VOC: sorted names), so a label set
    lacking a class numbers the others differently; a class ``tr`` lacks is an error naming it."""
    ids = {str(n): int(i) for i, n in zip(tr.categories["id"], tr.categories["name"])}
    unknown = [(int(i), str(n)) for i, n in zip(te.categories["id"], te.categories["name"]) if str(n) not in ids]
    if unknown:  # evaluate would refuse the models' predictions after training
        have = dict(zip(te.categories["id"].astype(int), te.categories["name"].astype(str)))
        wrong = [(int(i), str(n)) for i, n in zip(tr.categories["id"], tr.categories["name"]) if have.get(int(i)) != str(n)]
        i, name = wrong[0] if wrong else unknown[0]
        raise QualmetError(f"{test_src}: its categories differ from those of {src} (first: id {i} {name!r}, which "
                           f"it {'names ' + repr(have[i]) if i in have else 'lacks'}); its category {unknown[0][1]!r} is "
                           f"not among the training data's, and {what} must use the training data's category names")
    to_train = {int(i): ids[str(n)] for i, n in zip(te.categories["id"], te.categories["name"])}
    out = te.copy()
    out.annotations = out.annotations.assign(category_id=out.annotations["category_id"].map(to_train).astype("int64"))
    out.categories = tr.categories.copy()
    return out


def _also_test(spec: Spec, test: Dataset, train: Dataset) -> dict[str, Dataset]:
    """Each ``[data.also_test]`` label set on the test split's frames (matched by file name), with the
    test split's image ids, so one set of predictions scores against every label set."""
    d, base = spec.raw["data"], _base(spec)
    out = {}
    for name, rel in spec.also_test.items():
        p = (base / rel).resolve()
        ds = load_dataset(p, fmt=d.get("format", "auto"), images=_opt_path(base, d.get("test_images")))
        ds = align_categories(train, ds, (base / d["source"]).resolve(), p, f"[data.also_test] {name}")
        by_name = {str(f): int(i) for i, f in zip(ds.images["id"], ds.images["file_name"])}
        missing = [f for f in test.images["file_name"].astype(str) if f not in by_name]
        if missing:
            raise QualmetError(f"{p}: [data.also_test] {name} lacks {len(missing)} test frame(s) (first: {missing[0]}); "
                               "it must label every frame of the test split")
        to_test = {by_name[str(f)]: int(i) for i, f in zip(test.images["id"], test.images["file_name"])}
        anns = ds.annotations[ds.annotations["image_id"].isin(list(to_test))].copy()
        anns["image_id"] = anns["image_id"].map(to_test).astype("int64")
        anns["id"] = np.arange(1, len(anns) + 1, dtype="int64")
        out[name] = Dataset(images=test.images.copy(), annotations=anns.reset_index(drop=True),
                            categories=train.categories.copy(), image_root=test.image_root, source=str(p)).normalised()
        logger.info(f"{p}: {len(anns)} boxes on the {len(test.images)} test frames ([data.also_test] {name})")
    return out


def also_test_path(out: Path, name: str) -> Path:
    return Path(out) / "data" / f"test_{name}.json"


def load_also_test(spec: Spec, out: Path) -> dict[str, Dataset]:
    """The ``[data.also_test]`` label sets :func:`prepare_clean` wrote (name -> test frames with those labels)."""
    return {name: load_coco(also_test_path(out, name)) for name in spec.also_test}


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
        logger.info(f"label noise (seed {noise_seed}): {len(man)} changes at rate {spec.noise['rate']} "
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
                    noise_seed: int | None = None, executor: str | None = None) -> MetricRun:
    """Run the metrics the arms need on the noisy labels into ``folder/metrics`` (out-of-fold
    predictions first, into ``folder/oof``, when a metric needs them)."""
    from ..runner import run_metrics

    ds = noisy if isinstance(noisy, Dataset) else load_coco(noisy)
    reg = known_metrics(spec)
    names = spec.metrics_needed()
    preds = None
    if any("predictions" in reg[m].needs for m in names):
        preds = _oof_predictions(spec, Path(folder), ds, progress, noise_seed, executor, workers)
    logger.info(f"metrics: {', '.join(names)}")
    return run_metrics(ds, predictions=preds, metrics=names, out=Path(folder) / "metrics", workers=workers,
                       progress=progress)


def _oof_predictions(spec: Spec, folder: Path, ds: Dataset, progress: bool, noise_seed: int | None,
                     executor: str | None = None, workers: int | None = None) -> Path:
    """The out-of-fold predictions on ``ds``: ``[predictions] file`` (made elsewhere, relative to the
    spec; checked against ``ds`` like any predictions), else made once per configuration by
    cross-validation (the folds train where ``executor`` says, with the same results anywhere)."""
    p, det = spec.raw["predictions"], spec.raw["detector"]
    if p.get("file"):
        from ..formats import load_predictions

        src = _opt_path(_base(spec), p["file"])
        if not src.is_file():
            raise QualmetError(f"{spec.path}: [predictions] file {src} does not exist")
        load_predictions(src, ds)  # unknown image or category ids: one line naming the file, before any arm
        return src
    oof = folder / "oof" / "preds_oof.json"
    cfg = {"predictions": p, "detector": det, "data": spec.raw["data"], "noise": noise_config(spec, noise_seed),
           "labels": steps.dataset_hash(ds), "libraries": digest()}  # a torch upgrade retrains the fold models
    if not steps.done(folder / "oof", cfg, [oof]):
        from ..detector.crossval import crossval

        logger.info(f"out-of-fold predictions: {p['folds']} folds x {p.get('iters', det['iters'])} iterations")
        crossval(ds, folds=int(p["folds"]), out=oof, work_dir=folder / "oof" / "folds",
                 iters=int(p.get("iters", det["iters"])), seed=0, recipe=det["recipe"], progress=progress,
                 executor=executor, workers=workers or 2,
                 **{k: v for k, v in det.items() if k not in ("recipe", "iters", "val_fraction", "command")})
        steps.stamp(folder / "oof", cfg)
    return oof


def replicate(spec: Spec, out: Path, seed: int, clean_json: Path, test: Dataset, workers: int | None,
              progress: bool, also_test: dict[str, Dataset] | None = None, executor: str | None = None) -> Replicate:
    """The noise draw ``seed`` trains on, with its metrics (and out-of-fold predictions when an arm adds
    them): ``out/data`` shared, or ``out/draws/seed<k>``."""
    from ..formats import load_predictions
    from ..manifest import load_manifest

    noise_seed = spec.noise_seed(seed)
    folder = out / "draws" / f"seed{seed}" if spec.vary_noise else out
    noisy_json, manifest = prepare_noise(spec, clean_json, folder if spec.vary_noise else out / "data", noise_seed)
    noisy = load_coco(noisy_json)
    man = load_manifest(manifest) if manifest is not None else None
    preds = None
    if spec.arms_need_predictions():  # k-fold on the training pool only: never the test frames
        preds = load_predictions(_oof_predictions(spec, Path(folder), noisy, progress, noise_seed, executor, workers),
                                 noisy)

    def done(run: MetricRun) -> Replicate:
        return Replicate(folder, noise_seed if spec.has_noise else None, noisy, load_coco(clean_json), test, man, run,
                         dict(also_test or {}), preds)

    if not spec.metrics_needed():  # random and the anchors: selection reads only the boxes per frame
        return done(boxes_only_run(noisy))
    run = compute_metrics(spec, folder, noisy, workers, progress, noise_seed, executor)
    if manifest is not None:
        from ..label_errors import write_label_error_report

        write_label_error_report(run, manifest, folder / "label_errors")
        if folder != out and seed == spec.seeds[0]:  # the report shows one draw's: the first seed's
            write_label_error_report(run, manifest, out / "label_errors")
    return done(run)


def boxes_only_run(ds: Dataset) -> MetricRun:
    """A metrics run without metrics: the objects and frames tables, for specs whose arms rank by nothing."""
    objects = pd.DataFrame({"annotation_id": ds.annotations["id"].astype("int64"),
                            "image_id": ds.annotations["image_id"].astype("int64")})
    return MetricRun.from_tables(objects, pd.DataFrame({"image_id": ds.images["id"].astype("int64")}), {})
