"""qualmet's label-error ranking vs cleanlab's ObjectLab, from the SAME out-of-fold predictions.

Reads an experiment folder written by `qualmet experiment` (its noisy training set
``data/train_noisy.json``, the noise manifest ``data/manifest.json`` and the out-of-fold predictions
``oof/preds_oof.json``), computes every qualmet metric on the noisy set with those predictions (into
OUT/metrics; nothing is written in the experiment folder) -- the built-ins and, through the
``objectlab`` entry point (qualmet/objectlab_metrics.py), ObjectLab's scores with cleanlab's default
thresholds -- and scores how well each ranking finds the injected errors: AUROC and average
precision per error type,

- at frame level (ObjectLab scores images): a frame is erroneous if any manifest change touches it;
  for a type, positives are frames touched by that type and negatives are frames touched by none;
  qualmet's per-frame score is the suspicion of the frame's worst box (or the frame metric);
- at annotation level: qualmet's per-box metrics vs ObjectLab's per-box scores (the lower of its
  badly-located and swap box scores); ``missing`` boxes have no annotation, so frame level only.

Methods: each built-in qualmet metric, two qualmet combined scores fixed in advance (the experiment's
``combined`` arm metrics; the same plus the prediction-based ``confidence`` and ``missed_by_labels``),
ObjectLab's image score (metric ``objectlab_quality``, cleanlab's
``object_detection.rank.get_label_quality_scores``) and its three sub-scores (overlooked, badloc,
swap), pooled per image the way ObjectLab pools them, and ObjectLab with thresholds adapted to the
detector (computed here, on the plugin's conversion of the tables: the plugin keeps cleanlab's defaults).

    .venv/bin/pip install -c constraints.txt -e '.[objectlab]'   # cleanlab: the plugin's optional dependency
    nice .venv/bin/python benchmarks/bench_objectlab.py [--exp experiments/results/pandas_filtering] [--out /tmp/bench_objectlab]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FALLBACK_COMBINED = ("box_tightness", "black_white_ratio", "max_iou_other", "aspect_ratio")
MODEL_METRICS = ("confidence", "missed_by_labels")
TYPE_ORDER = ["any", "loose", "shift", "squash", "spurious", "duplicate", "missing", "wrong_class"]


# -- inputs ---------------------------------------------------------------------------------

def find_inputs(exp: Path) -> dict[str, Path]:
    """The noisy training set, noise manifest and out-of-fold predictions of an experiment folder."""
    paths = {"noisy": exp / "data" / "train_noisy.json", "manifest": exp / "data" / "manifest.json",
             "preds": exp / "oof" / "preds_oof.json"}
    missing = [f"{k} ({p})" for k, p in paths.items() if not p.is_file()]
    if missing:
        raise SystemExit(f"{exp}: not ready or not an experiment with noise and out-of-fold predictions; "
                         f"missing {', '.join(missing)}")
    return paths


def combined_metrics(exp: Path) -> tuple[str, ...]:
    """The metrics of the experiment's ``combined`` arm (fixed before looking at this benchmark)."""
    cfg = exp / "config.json"
    if cfg.is_file():
        for arm in json.loads(cfg.read_text()).get("spec", {}).get("arms", []):
            if arm.get("strategy") == "combined" and arm.get("metrics"):
                return tuple(arm["metrics"])
    return FALLBACK_COMBINED


# -- ObjectLab ------------------------------------------------------------------------------

PLUGIN = {"objectlab_quality": "objectlab", "objectlab_overlooked": "objectlab:overlooked",
          "objectlab_badloc": "objectlab:badloc", "objectlab_swap": "objectlab:swap"}  # metric -> method name


def adapted_thresholds(labels: list[dict], predictions: list[list[np.ndarray]]) -> tuple[float, float]:
    """(low, high) probability thresholds for a detector whose scores are not calibrated like the
    models ObjectLab's defaults (0.5, 0.95) were tuned on: high = the score of the N-th most confident
    prediction (N = labelled boxes), low = half of it. Uses no knowledge of the injected errors."""
    n = sum(len(lab["bboxes"]) for lab in labels)
    scores = np.sort(np.concatenate([c[:, 4] for p in predictions for c in p]))[::-1]
    high = float(scores[min(n, len(scores)) - 1]) if len(scores) else 0.95
    return high / 2, high


def _pooled(objects: pd.DataFrame, column: str, ids: pd.Index) -> pd.Series:
    """A per-box ObjectLab score pooled per frame as ObjectLab pools it (softmin; 1.0 for no box)."""
    from cleanlab.object_detection import rank

    by_image = {int(i): g.to_numpy(np.float64) for i, g in objects.groupby("image_id")[column]}
    return pd.Series(rank.pool_box_scores_per_image([by_image.get(int(i), np.zeros(0)) for i in ids]), index=ids)


def objectlab_scores(run, ds, preds: pd.DataFrame, ids: pd.Index
                     ) -> tuple[dict[str, pd.Series], dict[str, pd.Series], tuple[float, float]]:
    """ObjectLab's scores (lower = more likely mislabelled) per image and per annotation id.

    Default thresholds: the run's plugin metrics (qualmet/objectlab_metrics.py: the public overall
    score and the overlooked sub-score per frame, the badloc and swap scores per box), with badloc and
    swap also pooled per image as ObjectLab pools them; per annotation, the lower of badloc and swap.
    Adapted thresholds: cleanlab's private ``_get_subtype_label_quality_scores`` (the function the
    public one calls with fixed constants) and the box scores with those thresholds, on the plugin's
    conversion of the same tables. Also returns the adapted thresholds."""
    from cleanlab.object_detection import rank

    from qualmet.objectlab_metrics import to_objectlab_inputs

    fr = run.frames.set_index("image_id")
    obj = run.objects
    images = {PLUGIN[m]: fr[m].reindex(ids) for m in ("objectlab_quality", "objectlab_overlooked")}
    images.update({PLUGIN[m]: _pooled(obj, m, ids) for m in ("objectlab_badloc", "objectlab_swap")})
    boxes = {"objectlab": pd.Series(np.fmin(obj["objectlab_badloc"], obj["objectlab_swap"]).to_numpy(),
                                    index=obj["annotation_id"].to_numpy())}

    inputs = to_objectlab_inputs(ds.annotations, ds.images, preds)
    labels, predictions = inputs.labels, inputs.predictions
    low, high = adapted_thresholds(labels, predictions)
    bad_a = rank.compute_badloc_box_scores(labels=labels, predictions=predictions, low_probability_threshold=low)
    swap_a = rank.compute_swap_box_scores(labels=labels, predictions=predictions, high_probability_threshold=high)
    images["objectlab:adapted"] = pd.Series(rank._get_subtype_label_quality_scores(
        labels, predictions, low_probability_threshold=low, high_probability_threshold=high),
        index=inputs.image_ids).reindex(ids)
    ann_ids = ds.annotations["id"].to_numpy(np.int64)
    boxes["objectlab:adapted"] = pd.Series(
        np.concatenate([np.fmin(b, w) for b, w in zip(bad_a, swap_a)] + [np.zeros(0)]),
        index=np.concatenate([ann_ids[r] for r in inputs.rows] + [np.zeros(0, np.int64)]))
    return images, boxes, (low, high)


# -- qualmet scores -------------------------------------------------------------------------

def object_combined(objects: pd.DataFrame, metrics: tuple[str, ...], worse: dict[str, str]) -> pd.Series:
    """Per-annotation analogue of qualmet.select.combined_suspicion: mean percentile rank of suspicion."""
    from qualmet.metric_run import orient

    ranks = [orient(objects[m], worse[m]).rank(pct=True, method="average").fillna(0.0)
             for m in metrics if m in objects.columns]
    return pd.concat(ranks, axis=1).mean(axis=1)


def frame_scores(objects: pd.DataFrame, frames: pd.DataFrame, worse: dict[str, str], ids: pd.Index,
                 combos: dict[str, tuple[str, ...]]) -> dict[str, pd.Series]:
    """Per frame suspicion (higher = more suspicious) for each qualmet metric and combined score."""
    from qualmet.metric_run import MetricRun
    from qualmet.select import combined_suspicion

    run = MetricRun.from_tables(objects, frames, worse)
    out = {m: run.frame_suspicion(m, ids) for m in worse}
    for name, ms in combos.items():
        out[name] = combined_suspicion(run, ms, ids)
    return out


# -- scoring --------------------------------------------------------------------------------

def _least_suspicious_fill(s: pd.Series) -> np.ndarray:
    """NaN (e.g. a box metric on a frame left with no box) ranks as least suspicious, so that every
    method is scored on the same frames."""
    v = s.to_numpy(np.float64)
    finite = v[np.isfinite(v)]
    return np.where(np.isfinite(v), v, (finite.min() - 1.0) if len(finite) else 0.0)


def frame_table(scores: dict[str, pd.Series], manifest: pd.DataFrame, ids: pd.Index, seed: int = 0) -> pd.DataFrame:
    """Rows: method, type, positives, n, AUROC, AP, precision@k at frame level."""
    from qualmet.label_errors import average_precision
    from qualmet.stats import auroc

    touched = manifest.groupby("image_id")["type"].agg(set)
    kinds = pd.Series([touched.get(i, set()) for i in ids], index=ids)
    clean = kinds.map(len).eq(0).to_numpy()
    types = ["any"] + sorted(set().union(*kinds)) if len(kinds) else []
    # qualmet's average_precision breaks ties by input order: visit frames in a seeded random order
    # so ties (object_count, constant sub-scores) are broken at random, not by image id
    perm = np.random.default_rng(seed).permutation(len(ids))
    kinds, clean, ids = kinds.iloc[perm], clean[perm], ids[perm]
    rows = []
    for name, s in scores.items():
        v = _least_suspicious_fill(s.reindex(ids))
        for t in types:
            pos = ~clean if t == "any" else kinds.map(lambda k, t=t: t in k).to_numpy()
            sel = pos | clean
            y, x = pos[sel], v[sel]
            k = int(y.sum())
            top = np.argsort(-x, kind="mergesort")[:k]
            rows.append({"method": name, "type": t, "level": "frame", "positives": k, "n": int(sel.sum()),
                         "auroc": auroc(x, y), "ap": average_precision(x, y),
                         "precision_at_k": float(y[top].mean()) if k else float("nan")})
    return pd.DataFrame(rows)


def annotation_table(objects: pd.DataFrame, worse: dict[str, str], manifest: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Annotation-level rows from qualmet.label_errors.detection_table (object metrics only); rows are
    shuffled (seeded) first, so ties are not broken by annotation id (added boxes have the largest ids)."""
    from qualmet.label_errors import detection_table
    from qualmet.metric_run import MetricRun

    objects = objects.iloc[np.random.default_rng(seed).permutation(len(objects))]
    frames = pd.DataFrame({"image_id": pd.Series([], dtype="int64")})  # frame level is frame_table's job
    run = MetricRun.from_tables(objects, frames, {m: w for m, w in worse.items() if m in objects.columns})
    t = detection_table(run, manifest[manifest["type"] != "missing"])
    return t.rename(columns={"metric": "method"})


def pivot_md(table: pd.DataFrame, value: str, order: list[str]) -> str:
    """A markdown table: methods x error types, best (highest) per column in bold, with positives."""
    piv = table.pivot_table(index="method", columns="type", values=value, aggfunc="first")
    cols = [c for c in TYPE_ORDER if c in piv.columns]
    piv = piv.reindex(index=[m for m in order if m in piv.index], columns=cols)
    pos = table.groupby("type")["positives"].max()
    head = "| method | " + " | ".join(f"{c} ({int(pos[c])})" for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    best = piv.max(axis=0)
    for m, r in piv.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append("–" if not np.isfinite(v) else (f"**{v:.2f}**" if np.isclose(v, best[c]) else f"{v:.2f}"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(ftab: pd.DataFrame) -> str:
    """ObjectLab vs qualmet's two combined scores and its best single metric per error type (the best
    metric is picked after the fact, so that column is optimistic)."""
    lines = ["| type | ObjectLab | ObjectLab adapted | qualmet combined | qualmet combined+oof | best single qualmet metric (post hoc) |",
             "|---|---|---|---|---|---|"]
    for t in [c for c in TYPE_ORDER if c in set(ftab["type"])]:
        sub = ftab[ftab["type"] == t].set_index("method")
        single = sub.drop(index=[m for m in sub.index if m.startswith(("objectlab", "combined"))])
        b = single["auroc"].idxmax()
        cell = lambda m: f"{sub.at[m, 'auroc']:.2f} / {sub.at[m, 'ap']:.2f}"
        lines.append(f"| {t} ({int(sub['positives'].iloc[0])}) | {cell('objectlab')} | {cell('objectlab:adapted')} | {cell('combined')} | "
                     f"{cell('combined+oof')} | {b}: {single.at[b, 'auroc']:.2f} / {single.at[b, 'ap']:.2f} |")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exp", default=str(REPO / "experiments" / "results" / "pandas_filtering"),
                    help="experiment folder (read only)")
    ap.add_argument("--out", default="/tmp/bench_objectlab")
    ap.add_argument("--workers", type=int, default=1, help="metric worker processes (default 1: a shared machine)")
    args = ap.parse_args(argv)
    from qualmet.atomic import atomic_path, write_text
    from qualmet.formats import load_coco, load_predictions
    from qualmet.manifest import load_manifest
    from qualmet.discovery import load_registry
    from qualmet.runner import run_metrics

    exp, out = Path(args.exp), Path(args.out)
    if out.resolve().is_relative_to(exp.resolve()):
        raise SystemExit(f"--out {out} lies inside the experiment folder {exp}; choose another")
    paths = find_inputs(exp)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_coco(paths["noisy"])
    preds = load_predictions(paths["preds"], ds.images)
    manifest = load_manifest(paths["manifest"])
    print(f"{exp}: {len(ds.images)} frames, {len(ds.annotations)} boxes, {len(manifest)} injected errors "
          f"({manifest['type'].value_counts().to_dict()}), {len(preds)} out-of-fold predictions", flush=True)

    t0 = time.perf_counter()
    run = run_metrics(ds, predictions=preds, out=out / "metrics", workers=args.workers, progress=False)
    t_qualmet = time.perf_counter() - t0
    absent = [m for m in PLUGIN if m not in run.objects.columns and m not in run.frames.columns]
    if absent:
        raise SystemExit(f"the ObjectLab metrics ({', '.join(absent)}) did not run: install cleanlab "
                         f"(pip install -c constraints.txt -e '.[objectlab]'); run.json: {run.info.get('plugin_problems')}")
    reg = load_registry()
    cols = list(run.objects.columns) + list(run.frames.columns)
    worse = {m: reg[m].worse for m in cols if m in reg and m not in PLUGIN}  # qualmet's own metrics
    seconds = run.info.get("timings", {}).get("seconds_in_workers", {})
    t_plugin = sum(seconds.get(m, 0.0) for m in PLUGIN)  # 0 when every value came from the cache
    base = combined_metrics(exp)
    combos = {"combined": base, "combined+oof": tuple(dict.fromkeys(base + MODEL_METRICS))}
    ids = pd.Index(sorted(int(i) for i in ds.images["id"]), name="image_id")
    fscores = frame_scores(run.objects, run.frames, worse, ids, combos)

    t0 = time.perf_counter()
    ol_images, ol_boxes, (low, high) = objectlab_scores(run, ds, preds, ids)
    t_objectlab = time.perf_counter() - t0
    for name, v in ol_images.items():
        fscores[name] = -v.astype(float)  # lower score = worse

    objects = run.objects.drop(columns=list(PLUGIN), errors="ignore")
    obj_worse = {m: w for m, w in worse.items() if m in objects.columns}
    for name, box in ol_boxes.items():
        objects[name] = objects["annotation_id"].map(box)
        obj_worse[name] = "low"
    for name, ms in combos.items():
        objects[name] = object_combined(objects, ms, worse)
        obj_worse[name] = "high"

    ftab = frame_table(fscores, manifest, ids)
    atab = annotation_table(objects, obj_worse, manifest)
    table = pd.concat([ftab, atab], ignore_index=True)
    with atomic_path(out / "objectlab_vs_qualmet.csv") as tmp:
        table.to_csv(tmp, index=False)

    qual = sorted(worse, key=str)
    order = ["objectlab", "objectlab:adapted", "objectlab:overlooked", "objectlab:badloc", "objectlab:swap", "combined",
             "combined+oof"] + qual
    notes = (f"Data: `{exp}` ({len(ds.images)} frames, {len(ds.annotations)} noisy boxes, {len(manifest)} injected "
             f"errors), {len(preds)} out-of-fold predictions shared by both tools. `combined` = mean suspicion rank of "
             f"{', '.join(base)} (the experiment's combined arm); `combined+oof` adds {', '.join(MODEL_METRICS)}. "
             f"`objectlab` uses cleanlab's default thresholds (low 0.5, high 0.95); `objectlab:adapted` sets "
             f"high = the score of the N-th most confident prediction (N = labelled boxes) = {high:.3f}, low = "
             f"{low:.3f}. "
             f"Column headers give the number of positives. Time: qualmet metrics {t_qualmet:.1f} s "
             f"({args.workers} worker(s), cached chunks reused on a rerun), of which {t_plugin:.1f} s for the four "
             f"ObjectLab plugin metrics (0 when cached); ObjectLab's adapted variant and the pooling "
             f"{t_objectlab:.1f} s "
             f"(2 shared cores, niced, other jobs running: noisy).")
    md = ["# qualmet vs cleanlab ObjectLab: finding the injected label errors", "", notes, ""]
    for level, what in (("frame", "Frame level (a frame is positive if any change touches it)"),
                        ("annotation", "Annotation level (ObjectLab: min of its badloc and swap box scores)")):
        sub = table[table["level"] == level]
        if level == "annotation":
            sub = sub[sub["type"] != "missing"]
        for value, label in (("auroc", "AUROC (0.5 = chance)"), ("ap", "average precision (chance = share of positives)")):
            md += [f"## {what}: {label}", "", pivot_md(sub, value, order), ""]
    md[4:4] = ["## Headline (frame level, AUROC / AP)", "", headline(ftab), ""]
    text = "\n".join(md)
    write_text(out / "objectlab_vs_qualmet.md", text)
    print(text)
    print(f"wrote {out / 'objectlab_vs_qualmet.md'} and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
