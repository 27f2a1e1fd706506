"""``qualmet report``: a self-contained HTML report of a metrics run, an experiment and a model."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..log import logger


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
    p.add_argument("--predictions", default=None,
                   help="COCO results JSON on --test (default: the model predicts the few frames the report shows)")
    p.add_argument("--review", default=None, help="review folder from 'qualmet review' (its crops need --run's data set)")
    p.add_argument("--manifest", default=None,
                   help="noise manifest from 'qualmet corrupt' (default: the experiment's, or NOISY.manifest.json beside the data set)")
    p.add_argument("--dataset", default=None, help="the run's COCO JSON, when it is no longer where run.json says")
    p.add_argument("--images", default=None, help="image root of --dataset (default: the run's recorded root, else the JSON's .images sidecar, else images/ beside it)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier report)")
    p.set_defaults(func=cmd_report)


def predict_for_report(model: str | Path, test: str | Path, folder: str | Path) -> Path:
    """Predict the test frames the report's model section shows (``pick_frames``) with the model, as a
    COCO results file in ``folder``: the report draws predictions, it does not make them."""
    from ..atomic import write_json
    from ..detector.predictor import Predictor, to_results
    from ..formats import load_coco
    from ..report.model_section import pick_frames

    ds = load_coco(test)
    preds = Predictor.load(model).predict_dataset(ds.subset(pick_frames(ds.images["id"])), progress=False)
    path = Path(folder) / "predictions.json"
    write_json(path, to_results(preds))
    return path


def _default_test(args: argparse.Namespace) -> Path | None:
    if args.test is not None:
        return Path(args.test)
    split = Path(args.experiment) / "data" / "test.json" if args.experiment else None
    return split if split is not None and split.is_file() else None


def cmd_report(args: argparse.Namespace) -> int:
    import tempfile

    from ..report import build_report

    warnings: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        predictions = args.predictions
        test = _default_test(args)
        if args.model is not None and predictions is None and test is not None and (Path(args.model) / "model.pt").is_file():
            predictions = predict_for_report(args.model, test, tmp)
        index = build_report(args.out, run=args.run, experiment=args.experiment, model=args.model,
                             manifest=args.manifest, dataset=args.dataset, images=args.images, eval_dir=args.eval_dir,
                             test=args.test, predictions=predictions, title=args.title,
                             progress=not args.no_progress, warnings=warnings, review=args.review)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    logger.info(f"wrote {index} ({size / 1e6:.1f} MB); open it in a browser")
    for w in warnings:  # the report says so too; a user at the terminal should not have to find it there
        logger.warning(w)
    return 0
