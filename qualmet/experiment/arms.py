"""One arm for one seed: select under the budget, build the training subset (noisy labels, or for the
anchor arms the labels the noise manifest says are right), train the fixed detector, evaluate on the
clean test split. A finished arm is skipped on a rerun when its configuration and its training data
are unchanged.

The anchor arms bound what selection could achieve at this budget:

- ``clean``: random's frames with their clean labels, the ceiling;
- ``oracle_filter``: only frames without any injected error (best with ``match = "boxes"``);
- ``oracle_remove``: random's frames with exactly the injected wrong boxes removed; each true object
  left unlabelled by that (a deleted box, or the original of a moved, resized or relabelled one) is
  kept as an ignore region, a COCO ``iscrowd=1`` box. The ssdlite detector's loss leaves the
  anchors inside such a region out of both positives and hard negatives (:mod:`qualmet.detector.ignore`);
  other detectors treat the regions as background and warn.

Two arms use the experiment's out-of-fold predictions on the training pool (``[predictions]``: k-fold
on the pool, never the test frames) on random's frames, for labels that miss objects (BCCD's):

- ``ignore_predicted``: each prediction with score >= ``score`` (0.5) whose IoU with every label of its
  frame is below ``iou`` (0.5, any class) becomes an ignore region (``iscrowd=1``);
- ``pseudo_label``: the same predictions become ordinary boxes of the predicted class.

A ``review`` arm ranks the pool by the review queue (:func:`qualmet.review.frame_ranking`) built from
the arm's ``metrics`` (default: the review rules' metrics) and the same out-of-fold predictions.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, steps
from ..atomic import write_json, write_text
from ..dataset import BOX_COLUMNS, Dataset
from ..environment import versions
from ..errors import QualmetError
from ..formats import save_coco
from ..boxes import iou_matrix
from ..log import logger
from ..select import PREDICTED, USES_PREDICTIONS, Selection, Strategy, resolve_budget, select
from .data import Replicate, noise_config
from .learned import Verified, learned_run, with_verified
from .truth import oracle_remove, wrong_boxes
from .spec import Spec, slug


def arm_config(spec: Spec, arm: dict, seed: int, noise_seed: int | None) -> dict:
    """What an arm's result depends on besides its training data (the budget is the arm's own, if it
    has one); ``noise_seed`` is its draw's (None without injected noise)."""
    cfg = {"arm": arm, "seed": seed, "budget": spec.budget(arm), "detector": spec.raw["detector"],
           "data": spec.raw["data"], "noise": noise_config(spec, noise_seed)}
    if arm.get("strategy") in USES_PREDICTIONS:  # the fold models that made its boxes or its queue
        cfg["predictions"] = spec.raw["predictions"]
    return cfg


def known_wrong(subset: Dataset, rep: Replicate) -> float:
    """Boxes the detector trains on that the manifest says are wrong (NaN without a manifest)."""
    if rep.manifest is None:
        return float("nan")
    return float(wrong_boxes(subset, rep.clean, subset.images["id"]).sum())


def unlabelled_predictions(labels: Dataset, preds: pd.DataFrame, score: float = 0.5, iou: float = 0.5) -> pd.DataFrame:
    """The predictions on ``labels``' frames with score >= ``score`` whose IoU with every label of their
    frame (any class, ignore regions included) is below ``iou``: objects the labels seem to miss."""
    frames = set(labels.images["id"].astype(int))
    p = preds[preds["image_id"].astype(int).isin(frames) & (preds["score"] >= score)]
    if not len(p):
        return p.copy()
    keep = np.ones(len(p), dtype=bool)
    by_frame = {int(k): g for k, g in labels.annotations.groupby("image_id")}
    for img, idx in p.groupby("image_id").indices.items():
        g = by_frame.get(int(img))
        if g is not None and len(g):
            keep[idx] = iou_matrix(p.iloc[idx][BOX_COLUMNS].to_numpy(float), g[BOX_COLUMNS].to_numpy(float)).max(axis=1) < iou
    return p[keep].copy()


def add_predicted(labels: Dataset, preds: pd.DataFrame, score: float = 0.5, iou: float = 0.5,
                  ignore: bool = True) -> tuple[Dataset, int]:
    """``labels`` plus :func:`unlabelled_predictions` as ignore regions (``iscrowd=1``, ``ignore``) or as
    boxes of the predicted class; and how many were added."""
    add = unlabelled_predictions(labels, preds, score, iou)
    out = labels.copy()
    if not len(add):
        return out, 0
    anns = out.annotations
    first = int(anns["id"].max()) + 1 if len(anns) else 1
    new = pd.DataFrame({c: add[c].to_numpy() for c in ["image_id", "category_id"] + BOX_COLUMNS})
    new.insert(0, "id", np.arange(first, first + len(new), dtype="int64"))
    new["area"] = new["w"] * new["h"]
    new["iscrowd"] = 1 if ignore else 0
    out.annotations = pd.concat([anns, new], ignore_index=True)
    return out.normalised(), len(new)


def build_subset(arm: dict, s: Strategy, sel: Selection, rep: Replicate) -> Dataset:
    """The training data an arm's selection stands for."""
    from ..noise import restore_images

    if s.kind in PREDICTED:
        if rep.predictions is None:
            raise QualmetError(f"arm {arm.get('name')!r}: strategy {s.kind!r} needs the out-of-fold predictions")
        return add_predicted(rep.noisy.subset(sel.image_ids), rep.predictions, s.score, s.iou,
                             ignore=s.kind == "ignore_predicted")[0]
    if s.kind == "clean":
        return rep.clean.subset(sel.image_ids)
    if s.kind == "oracle_remove":
        return oracle_remove(rep.noisy.subset(sel.image_ids), rep.clean.subset(sel.image_ids))
    subset = sel.apply(rep.noisy)
    if arm.get("oracle"):
        subset = restore_images(subset, rep.manifest, sel.relabel_images)
    return subset


def arm_folder(out: Path, arm: dict, seed: int) -> Path:
    """Where one arm's seed lives in an experiment folder (result.json, model, evaluation)."""
    return out / "arms" / slug(arm["name"]) / f"seed{seed}"


def run_arm(spec: Spec, arm: dict, seed: int, out: Path, rep: Replicate, progress: bool) -> dict:
    """Select, train, evaluate one arm for one seed; resumable (skips when result.json matches)."""
    arm_dir = arm_folder(out, arm, seed)
    cfg = arm_config(spec, arm, seed, rep.noise_seed)
    result_path = arm_dir / "result.json"
    strategy = Strategy.from_dict(arm)
    sel, subset, verified = _select_and_build(spec, arm, strategy, seed, rep)
    # boxes (pseudo_label) or ignore regions (ignore_predicted) added to random's frames' labels
    n_added = len(subset.annotations) - len(rep.noisy.subset(sel.image_ids).annotations) if strategy.kind in PREDICTED else 0
    fingerprint = steps.dataset_hash(subset)  # what it trains on: frames, boxes and ignore regions
    if result_path.exists():
        prev = json.loads(result_path.read_text())
        if prev.get("config_hash") == steps.fingerprint(cfg):
            if prev.get("selection_hash") == fingerprint:
                return {**prev, "resumed": True}  # for the log line only: result.json stays as it was
            # same configuration, other training data: the metric values changed (code or library versions)
            logger.info(f"  {arm['name']} seed {seed}: the metrics now select other frames or boxes than the recorded run; "
                        "retraining")
    arm_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_training(arm_dir, {"selection_hash": fingerprint})
    save_coco(subset, arm_dir / "subset.json")
    write_text(arm_dir / "reasons.csv", sel.reasons.to_csv(index=False))
    t0 = time.perf_counter()
    ev = _train_and_evaluate(subset, rep.test, arm_dir, spec, seed, progress, rep.also_test)
    stats = ev["stats"]
    crowd = int((subset.annotations["iscrowd"] != 0).sum())
    result = {"arm": arm["name"], "seed": seed, "config_hash": steps.fingerprint(cfg), "config": cfg, "stats": stats,
              "per_class_AP": ev["per_class_AP"], "also_test": ev["also_test"], "n_added": n_added,
              "n_frames": len(sel.image_ids), "n_boxes": int(len(subset.annotations)) - crowd, "n_ignore": crowd,
              "n_wrong": _or_none(known_wrong(subset, rep)), "target_boxes": sel.target_boxes, "noise_seed": rep.noise_seed,
              "dropped_annotations": len(sel.drop_annotations), "ignored_annotations": len(sel.ignore_annotations),
              "train_seconds": round(time.perf_counter() - t0, 1),
              **({} if verified is None else {"verified_frames": len(verified.image_ids), "verified_boxes": verified.n_boxes,
                                              "verified_wrong": verified.n_wrong, "learned_weights": verified.weights}),
              "selection_hash": fingerprint, "qualmet_version": __version__, "environment": versions()}
    write_json(result_path, result, indent=2)  # written last: its presence means the arm is complete
    return result


def _select_and_build(spec: Spec, arm: dict, strategy: Strategy, seed: int,
                      rep: Replicate) -> tuple[Selection, Dataset, Verified | None]:
    """The arm's selection and training data; a learned arm (``verified``) first spends part of its
    budget on verified frames and ranks the rest by the combiner fitted on them (:mod:`.learned`)."""
    if not arm.get("verified"):
        sel = select(rep.run, rep.noisy.images["id"], strategy, spec.budget(arm), seed, error_frames=rep.error_frames,
                     review_frames=_review_frames(strategy, rep))
        return sel, build_subset(arm, strategy, sel, rep), None
    run, verified = learned_run(rep.run, rep.noisy, rep.clean, arm, seed)
    taken = set(verified.image_ids)
    pool = [int(i) for i in rep.noisy.images["id"] if int(i) not in taken]
    n = resolve_budget(len(rep.noisy.images), spec.budget(arm)) - len(verified.image_ids)
    if n < 1:
        raise QualmetError(f"arm {arm['name']!r}: verified = {len(verified.image_ids)} frames leaves nothing of the "
                           f"budget's {n + len(verified.image_ids)} frames to select")
    sel = select(run, pool, strategy, n, seed, error_frames=rep.error_frames)
    subset = with_verified(build_subset(arm, strategy, sel, rep), rep.clean, verified)
    extra = pd.DataFrame({"image_id": verified.image_ids, "kept": True, "reason": "verified (clean labels)",
                          "suspicion": np.nan})
    sel.reasons = pd.concat([sel.reasons, extra[sel.reasons.columns.intersection(extra.columns)]], ignore_index=True)
    sel.image_ids = sorted(sel.image_ids + verified.image_ids)
    return sel, subset, verified


def _review_frames(s: Strategy, rep: Replicate) -> pd.DataFrame | None:
    """A review arm's queue of the pool: its metrics (default: the review rules') and the out-of-fold predictions."""
    if s.kind != "review":
        return None
    from ..review import RULE_METRICS, frame_ranking

    return frame_ranking(rep.noisy, rep.run, rep.predictions, s.metrics or RULE_METRICS)


def result_line(r: dict) -> str:
    """One line for an arm's result, as the experiment's log shows it."""
    s = r["stats"]
    return (f"  {r['arm']} seed {r['seed']}: AP {s['AP'] or 0:.3f}  AP50 {s['AP50'] or 0:.3f}  AR100 {s['AR100'] or 0:.3f}"
            f"  ({r['n_frames']} frames, {r['n_boxes']} boxes, {float(r.get('train_seconds') or 0):.0f} s)"
            + ("; done before, skipped" if r.get("resumed") else ""))


def _or_none(v: float) -> float | None:
    """JSON has no NaN: None (no noise manifest, nothing known to be wrong)."""
    return None if v != v else v


def _train_and_evaluate(subset: Dataset, test: Dataset, arm_dir: Path, spec: Spec, seed: int, progress: bool,
                        also_test: dict[str, Dataset] | None = None) -> dict:
    """Train, predict the test frames once, and score them against the test labels and each ``also_test``
    label set (same frames and image ids): {"stats", "per_class_AP", "also_test": {name: {...}}}."""
    from ..detector.train import train
    from ..evaluate import evaluate

    det = spec.raw["detector"]
    if det.get("command"):  # the user's own trainer (experiment/external.py)
        from .external import external_predictions

        preds = external_predictions(det["command"], arm_dir / "subset.json", test, arm_dir, seed, int(det["iters"]))
    else:
        overrides = {k: v for k, v in det.items() if k not in ("recipe", "iters", "val_fraction")}  # e.g. input_size
        res = train(subset, arm_dir / "model", val_fraction=float(det.get("val_fraction", 0.0)),
                    iters=int(det["iters"]), seed=seed, recipe=det["recipe"], progress=progress, **overrides)
        preds = res.predictor.predict_dataset(test, progress=False)
    ev = evaluate(test, preds, out=arm_dir / "eval")
    also = {}
    for name, labels in (also_test or {}).items():
        e = evaluate(labels, preds, out=arm_dir / f"eval_{name}")
        also[name] = {"stats": dict(e["stats"]), "per_class_AP": dict(e["per_class_AP"])}
    # None where COCO cannot compute a stat (e.g. no large objects)
    return {"stats": dict(ev["stats"]), "per_class_AP": dict(ev["per_class_AP"]), "also_test": also}


def clear_stale_training(arm_dir: Path, want: dict) -> None:
    """Keep ``arm_dir/model`` only when it was trained (or interrupted) on exactly this arm's data:
    a resumed experiment whose arm now trains on other frames or labels starts that model afresh
    instead of resuming (or reusing) the old one. ``training.json`` records what the model is for."""
    marker = arm_dir / "training.json"
    try:
        had = json.loads(marker.read_text()) if marker.exists() else None
    except (OSError, json.JSONDecodeError):
        had = None
    if had != want:
        for d in ["model", "external", "eval", *(p.name for p in arm_dir.glob("eval_*") if p.is_dir())]:
            if (arm_dir / d).exists():
                shutil.rmtree(arm_dir / d)
        write_json(marker, want, indent=2)
