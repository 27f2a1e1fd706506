"""``qualmet evaluate``: COCO metrics, per-class AP, PR curve, confusion matrix, per-object flags."""
from __future__ import annotations

import argparse

from ..log import logger


def iou_threshold_arg(text: str) -> float:
    """argparse type: a number in (0, 1] (at 0 any box, even of another class, would match)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text}: the IoU threshold must be in (0, 1]")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate predictions against a data set (pycocotools bbox + more)",
                       description="Writes metrics.json/.txt (12 COCO stats, per-class AP), pr_curve.png, "
                                   "confusion_matrix.png/.csv and gt_flags / pred_flags (.parquet and .csv) "
                                   "under --out. Predictions on images or of categories the data set does not "
                                   "have are refused; predictions inside crowd regions are ignored, as in COCO.")
    p.add_argument("dataset", help="ground truth COCO JSON")
    p.add_argument("predictions", help="predictions: COCO results JSON (image_id, category_id, bbox, score)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="score threshold for the confusion matrix and TP/FP/FN counts (AP uses all; default 0.5)")
    p.add_argument("--iou-threshold", type=iou_threshold_arg, default=0.5,
                   help="IoU for matching the flags and the confusion matrix, in (0, 1] (default 0.5; the COCO "
                        "stats always use COCO's own thresholds)")
    p.add_argument("--backend", default="pycocotools", choices=("pycocotools", "faster-coco-eval"),
                   help="what computes the COCO stats: pycocotools (default) or faster-coco-eval (same numbers, "
                        "faster; pip install 'qualmet[fast-eval]'); the flags always follow pycocotools' matches")
    p.add_argument("--match-by", default="id", choices=("id", "file_name"),
                   help="how predictions name their images: id (default) or file_name (an image_id that is the "
                        "file's name or stem, as in Ultralytics' predictions.json; a COCO file of predictions with "
                        "its own images is matched by their file names)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..formats import load_coco, load_predictions

    gt = load_coco(args.dataset)
    preds = load_predictions(args.predictions, gt, match_by=args.match_by)
    evaluate(gt, preds, out=args.out, score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
             verbose=True, backend=args.backend)
    logger.info(f"wrote {args.out}")
    return 0
