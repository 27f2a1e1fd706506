"""``qualmet review``: the review queue of a data set (likely label issues, worst first)."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_dataset_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="rank likely label issues (no noise manifest needed) for a labelling tool",
                       description="The boxes and frames most likely to be wrong, worst first: each issue with a kind "
                                   "(empty box, duplicate, wrong class, loose/shifted box, spurious box, missing box, bad "
                                   "image), "
                                   "a score and the metrics behind it. Writes review.csv, frames.csv, review.json (the "
                                   "COCO data set with qualmet_score/qualmet_issue/qualmet_reasons per annotation), "
                                   "suggestions.json (suggested boxes, COCO results) and review.md. See docs/review.md.")
    add_dataset_args(p)
    p.add_argument("--run", required=True, help="metrics run folder of this data set (from `qualmet metrics run`)")
    p.add_argument("--predictions", default=None,
                   help="out-of-fold predictions (COCO results JSON, e.g. from `qualmet crossval`): adds missing "
                        "boxes, wrong classes and suggested boxes")
    p.add_argument("--verified", default=None,
                   help="CSV annotation_id,verdict (correct|wrong) of boxes checked by hand: the combined score "
                        "becomes a logistic model fitted on them")
    p.add_argument("--manifest", default=None,
                   help="noise manifest of injected errors (from `qualmet corrupt`): also write how the queue does "
                        "on them (precision@k per kind, recall per injected type) to against_manifest.csv")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_review)


def cmd_review(args: argparse.Namespace) -> int:
    from ..combine import read_verified
    from ..formats import load_coco, load_predictions
    from ..review import build_review
    from ..review_files import write_review
    from .experiment import _load_run

    ds = load_coco(args.dataset, images=args.images)
    run = _load_run(args.run, ds, args.dataset)
    preds = load_predictions(args.predictions, ds) if args.predictions else None
    verified = read_verified(args.verified, run) if args.verified else None
    review = build_review(ds, run, preds, verified)
    paths = write_review(review, ds, args.out)
    counts = review.issues["kind"].value_counts()
    logger.info(f"{len(review.issues)} issues ({', '.join(f'{k} {n}' for k, n in counts.items()) or 'none'}); "
                f"wrote {', '.join(str(p) for p in paths.values())}")
    for note in review.notes:
        logger.info(f"note: {note}")
    if args.manifest:
        _against_manifest(review, args.manifest, args.out)
    return 0


def _against_manifest(review, manifest_path: str, out: str) -> None:
    from pathlib import Path

    from ..atomic import write_text
    from ..label_errors import review_against_manifest
    from ..manifest import load_manifest

    prec, rec = review_against_manifest(review.issues, load_manifest(manifest_path))
    text = (prec.round(3).to_string(index=False) + "\n\n" + rec.round(3).to_string(index=False) + "\n")
    write_text(Path(out) / "against_manifest.csv", prec.to_csv(index=False) + "\n" + rec.to_csv(index=False))
    print(text, end="")
    logger.info(f"wrote {Path(out) / 'against_manifest.csv'}")
