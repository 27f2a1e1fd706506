"""``qualmet experiment``, ``qualmet select`` and ``qualmet errors``: strategies against the random baseline."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..log import logger
from ._common import add_dataset_args, add_seed


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("experiment", help="run every selection strategy against the random baseline, over seeds",
                       description="Run an experiment spec (experiments/NAME.toml): data, noise, metrics, arms x seeds, "
                                   "summary. Finished arms are skipped on a rerun.")
    e.add_argument("spec", help="experiment TOML, e.g. experiments/pandas_filtering.toml")
    e.add_argument("--out", default=None, help="results folder (default experiments/results/NAME[_quick])")
    e.add_argument("--quick", action="store_true", help="apply the spec's [quick] table (minutes, for CI and the demo)")
    e.add_argument("--summarize", action="store_true",
                   help="train nothing: rewrite results.csv and the summaries from the arms already finished in "
                        "the results folder (marked PARTIAL when some are missing)")
    e.add_argument("--workers", type=int, default=None,
                   help="metric worker processes (default: all cores); with --executor dask, also the local "
                        "cluster's workers (default 2)")
    e.add_argument("--executor", default=None, metavar="local|dask|dask:tcp://HOST:PORT",
                   help="where the arms and the out-of-fold folds train: one after another here (local, the "
                        "default), or as tasks on a local Dask cluster (dask) or an existing one; workers write "
                        "the arm and fold folders, so the output folder must be shared with them (docs/dask.md)")
    e.set_defaults(func=cmd_experiment)

    s = sub.add_parser("select", help="select a training subset from a metrics run",
                       description="Choose frames by a strategy under a budget; writes subset.json, reasons.csv "
                                   "(and relabel.json for --strategy relabel).")
    add_dataset_args(s, images_help="image root (default: the one the --run recorded for this data set, else the "
                                    "JSON's .images sidecar, else images/ beside it); subset.json's sidecar names it")
    s.add_argument("--run", required=True, help="metrics run folder (objects.parquet, frames.parquet)")
    s.add_argument("--strategy", default="random", help="random, filter, rank, stratify, combined, remove_annotations, "
                                                        "ignore_annotations (suspicious boxes become ignore regions), "
                                                        "relabel, review (clean and the oracle_* anchors need a noise manifest: "
                                                        "experiments only)")
    s.add_argument("--metric", default=None, help="the metric to filter, rank or stratify by (a column of the run)")
    s.add_argument("--metrics", default=None, help="comma-separated, for combined / relabel / review (default: the "
                                                   "run's)")
    s.add_argument("--predictions", default=None,
                   help="review: out-of-fold predictions (COCO results), so the queue also counts missing boxes "
                        "and wrong classes")
    s.add_argument("--method", default="iqr", choices=("iqr", "percentile", "threshold"),
                   help="filter: which values are suspicious (beyond the IQR fence on the metric's worse side, the "
                        "worst --percentile percent, or beyond --threshold)")
    s.add_argument("--iqr-k", type=float, default=1.5, help="filter --method iqr: fence at k x IQR (default 1.5)")
    s.add_argument("--percentile", type=float, default=10.0,
                   help="filter --method percentile: the worst share dropped, in percent (default 10)")
    s.add_argument("--threshold", type=float, default=None,
                   help="filter --method threshold: values worse than this are suspicious")
    s.add_argument("--bins", type=int, default=4, help="stratify: quantile bins of the metric (default 4)")
    s.add_argument("--k", type=int, default=None, help="relabel: frames to relabel")
    s.add_argument("--match", default="frames", choices=("frames", "boxes"),
                   help="frames: exactly the budget's frame count; boxes: walk on until the subset holds as many "
                        "boxes as the random sample of this seed (within one frame), so a filter that drops "
                        "crowded frames does not also train on fewer boxes")
    s.add_argument("--frame-score", default="max", choices=("max", "mean", "sum"),
                   help="how an object metric scores a frame: its worst box (max), the mean, or the sum (about "
                        "the expected wrong boxes when suspicion is calibrated)")
    s.add_argument("--budget", default="0.25", help="a fraction of the frames (0.25) or a frame count (200)")
    add_seed(s)
    s.add_argument("--out", required=True, help="the subset as a COCO JSON file")
    s.set_defaults(func=cmd_select)

    r = sub.add_parser("errors", help="how well each metric finds injected label errors (AUROC, AP)",
                       description="Score each metric's ranking against a noise manifest: AUROC, AP, precision@k.")
    add_dataset_args(r)
    r.add_argument("--manifest", required=True, help="the noise manifest of the run's data set (qualmet corrupt)")
    r.add_argument("--run", required=True, help="metrics run folder")
    r.add_argument("--out", required=True, help="folder for label_errors.csv, .md and the AUROC heatmap .png")
    r.add_argument("--learned", type=int, default=None, metavar="V",
                   help="add a 'learned' row: a logistic combiner fitted on V verified frames (truth from the "
                        "manifest); every row is then scored on the other frames")
    r.add_argument("--learn-from", default=None, metavar="M1,M2",
                   help="the object metrics the learned combiner uses (default: all of the run's)")
    add_seed(r)
    r.set_defaults(func=cmd_errors)
    _register_importance(sub)


def cmd_experiment(args: argparse.Namespace) -> int:
    from ..experiment import run_experiment, summarize_experiment

    if args.summarize:
        summarize_experiment(args.spec, out=args.out, quick=args.quick)
        return 0
    run_experiment(args.spec, out=args.out, quick=args.quick, workers=args.workers, progress=not args.no_progress,
                   executor=args.executor)
    return 0


def _load_run(run_dir: str, ds, ds_path: str):
    """The metrics run in ``run_dir``, which must have been computed on ``ds`` (same content hash)."""
    from ..errors import QualmetError
    from ..metric_run import MetricRun
    from ..steps import dataset_hash

    run = MetricRun.load(run_dir)
    recorded = (run.info.get("dataset") or {}).get("hash")
    if recorded and recorded != dataset_hash(ds):
        raise QualmetError(f"{run_dir}: this metrics run was computed on another data set "
                           f"({run.info['dataset'].get('path')}), not {ds_path}; run `qualmet metrics run {ds_path} "
                           "--out DIR` for it")
    return run


def parse_budget(text: str) -> float | int:
    """'0.25' -> a fraction, '200' -> a frame count; anything else is a one-line error."""
    from ..errors import QualmetError

    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise QualmetError(f"--budget {text!r}: expected a fraction of the frames (0.25) or a frame count (200)") from None


def cmd_select(args: argparse.Namespace) -> int:
    from .. import atomic
    from ..formats import load_coco, save_coco
    from ..errors import QualmetError
    from ..select import ANCHORS, PREDICTED, Strategy, select

    from ..metric_run import recorded_image_root

    if args.strategy in ANCHORS:
        raise QualmetError(f"--strategy {args.strategy}: an anchor arm reads a noise manifest (what is really wrong); "
                           "it runs in `qualmet experiment` specs only")
    if args.strategy in PREDICTED:
        raise QualmetError(f"--strategy {args.strategy}: it adds the experiment's out-of-fold predictions to random's "
                           "frames; it runs in `qualmet experiment` specs only")
    ds = load_coco(args.dataset, images=args.images)
    run = _load_run(args.run, ds, args.dataset)
    recorded = recorded_image_root(run.info, args.dataset) if args.images is None else None
    if recorded:
        ds.image_root = Path(recorded)  # the images the metrics were computed on
    spec = {"strategy": args.strategy, "method": args.method, "iqr_k": args.iqr_k, "percentile": args.percentile,
            "bins": args.bins, "match": args.match, "frame_score": args.frame_score}
    for k in ("metric", "threshold", "k"):
        if getattr(args, k) is not None:
            spec[k] = getattr(args, k)
    if args.metrics:
        spec["metrics"] = args.metrics.split(",")
    budget = parse_budget(args.budget)
    strategy, frames = Strategy.from_dict(spec), None
    if strategy.kind == "review":  # frames with the fewest review issues first (docs/review.md)
        from ..formats import load_predictions
        from ..review import frame_ranking

        preds = load_predictions(args.predictions, ds) if args.predictions else None
        frames = frame_ranking(ds, run, preds, strategy.metrics or None)
    sel = select(run, ds.images["id"], strategy, budget, args.seed, review_frames=frames)
    out = Path(args.out)
    sub = sel.apply(ds)
    save_coco(sub, out / "subset.json")
    with atomic.atomic_path(out / "reasons.csv") as tmp:
        sel.reasons.to_csv(tmp, index=False)
    if sel.relabel_images:  # frames to relabel (with their most suspicious boxes marked, for object-level metrics)
        rel = ds.subset(sel.relabel_images)
        rel.annotations["suspicious"] = rel.annotations["id"].isin(sel.relabel_annotations)
        save_coco(rel, out / "relabel.json")
        logger.info(f"wrote {out / 'relabel.json'}: {len(rel.images)} frames to relabel, "
              f"{int(rel.annotations.suspicious.sum())} suspicious boxes marked")
    logger.info(f"wrote {out / 'subset.json'}: {len(sel.image_ids)} of {len(ds.images)} frames ({args.strategy}), "
          f"{len(sel.drop_annotations)} annotations dropped, {len(sel.ignore_annotations)} made ignore regions; "
          f"reasons in {out / 'reasons.csv'}")
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    from ..errors import QualmetError
    from ..label_errors import write_label_error_report
    from ..formats import load_coco
    from ..manifest import load_manifest, manifest_mismatch

    ds = load_coco(args.dataset, images=args.images)
    run = _load_run(args.run, ds, args.dataset)
    manifest = load_manifest(args.manifest)
    if not len(manifest):
        raise QualmetError(f"{args.manifest}: records no injected error (was it written with --rate 0?): "
                           "there is nothing to find")
    why = manifest_mismatch(ds, manifest)
    if why:
        raise QualmetError(f"{args.manifest}: does not describe {args.dataset}: {why}")
    if args.learned is None:
        table = write_label_error_report(run, args.manifest, args.out)
    else:
        from ..label_errors import learned_table, write_label_error_table

        metrics = [m.strip() for m in args.learn_from.split(",") if m.strip()] if args.learn_from else None
        table, frames = learned_table(run, manifest, args.learned, args.seed, metrics)
        write_label_error_table(table, args.out)
        logger.info(f"learned: fitted on the boxes of {len(frames)} verified frames (seed {args.seed}); "
                    f"every row scored on the other {len(run.frames) - len(frames)} frames")
    piv = table.pivot_table(index="metric", columns="type", values="auroc")
    print(piv.round(3).to_string())
    logger.info(f"wrote {args.out}/label_errors.csv, .md, .png")
    return 0


def _register_importance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("importance", help="which data properties the model struggles with",
                       description="Predict the test split, compute object metrics on it, and relate each metric to "
                                   "whether the model found the object (Spearman, AUROC, mutual information).")
    p.add_argument("model", help="model folder from `qualmet train`")
    add_dataset_args(p)
    p.add_argument("--metrics", default=None, help="comma-separated object metrics (default: all label/pixel ones)")
    p.add_argument("--out", required=True, help="folder for importance.csv and importance.png")
    p.set_defaults(func=cmd_importance)


def cmd_importance(args: argparse.Namespace) -> int:
    from ..importance import importance

    table = importance(args.model, args.dataset, args.out, images=args.images,
                       metrics=args.metrics.split(",") if args.metrics is not None else None)
    print(table.round(3).to_string(index=False))
    logger.info(f"wrote {args.out}/importance.csv and importance.png")
    return 0
