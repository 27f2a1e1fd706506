"""``qualmet report``: a self-contained HTML report of a metrics run, an experiment and a model."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report (metrics, galleries, explorer, model, experiment)",
                       description="Write OUT/index.html and OUT/assets/: an overview of the data, each metric's "
                                   "histogram with its IQR fences and its most/least suspicious objects, a sortable and "
                                   "filterable explorer with id export, the model's training and evaluation, and the "
                                   "experiment's verdict. Sections whose inputs are not given are left out. Opens from "
                                   "disk with no network and no server.")
    p.add_argument("--run", default=None, help="metrics run folder from 'qualmet metrics run' (default with --experiment: EXP/metrics)")
    p.add_argument("--experiment", default=None, help="experiment folder from 'qualmet experiment'")
    p.add_argument("--model", default=None, help="model folder from 'qualmet train' (e.g. EXP/arms/random/seed0/model)")
    p.add_argument("--eval", dest="eval_dir", default=None,
                   help="evaluation folder from 'qualmet evaluate' (default: MODEL/eval or MODEL/../eval)")
    p.add_argument("--test", default=None, help="test set COCO JSON for prediction examples (default: the experiment's test split)")
    p.add_argument("--predictions", default=None, help="COCO results JSON on --test (default: run the model on a few frames)")
    p.add_argument("--manifest", default=None,
                   help="noise manifest from 'qualmet corrupt' (default: the experiment's, or NOISY.manifest.json beside the data set)")
    p.add_argument("--dataset", default=None, help="the run's COCO JSON, when it is no longer where run.json says")
    p.add_argument("--images", default=None, help="image root of --dataset (default: the run's recorded root, else the JSON's .images sidecar, else images/ beside it)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_report

    import sys

    warnings: list[str] = []
    index = build_report(args.out, run=args.run, experiment=args.experiment, model=args.model, manifest=args.manifest,
                         dataset=args.dataset, images=args.images, eval_dir=args.eval_dir, test=args.test,
                         predictions=args.predictions, title=args.title, progress=not args.no_progress,
                         warnings=warnings)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"wrote {index} ({size / 1e6:.1f} MB); open it in a browser")
    for w in warnings:  # the report says so too; a user at the terminal should not have to find it there
        print(f"warning: {w}", file=sys.stderr)
    return 0
