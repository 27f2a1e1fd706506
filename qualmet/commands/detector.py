"""``qualmet train | predict | summary | crossval``: the fixed torchvision detector."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_dataset_args, add_seed


def _add_training_args(p: argparse.ArgumentParser) -> None:
    from ..detector.recipe import RECIPES

    p.add_argument("--recipe", default="ssdlite256", choices=sorted(RECIPES),
                   help="training recipe (default ssdlite256; see docs/detector.md)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the recipe's, 600)")
    p.add_argument("--input-size", type=int, default=None, help="square input side in pixels (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the recipe's, 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="iterations between resumable checkpoints (default: the recipe's, 100)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="iterations between train/val loss and val mAP log rows (default: the recipe's, 50)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads while training and predicting (default: the recipe's, 0 = torch's own, one per "
                        "physical core); results repeat bitwise only for the same count")
    p.add_argument("--weights", default=None,
                   help="start from torchvision's weights of the whole detector, by name (DEFAULT, COCO_V1)")
    p.add_argument("--weights-backbone", default=None,
                   help="start from torchvision's backbone weights, by name (e.g. IMAGENET1K_V1)")
    p.add_argument("--checkpoint", default=None,
                   help="start from a local state dict (whole detector or backbone) or a qualmet model folder")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: the recipe's, 1e-3)")
    p.add_argument("--warmup-iters", type=int, default=None,
                   help="linear warm-up iterations before the cosine decay (default: the recipe's, 50)")
    p.add_argument("--freeze-bn", dest="freeze_bn", action="store_const", const=True, default=None,
                   help="keep the backbone's loaded BN statistics (with --weights, --weights-backbone or --checkpoint)")
    p.add_argument("--no-strict", dest="strict", action="store_const", const=False, default=None,
                   help="load the weights that fit and warn about the rest (default: keys that do not fit are an error)")
    add_seed(p)


def _training_overrides(args: argparse.Namespace) -> dict:
    return {"input_size": args.input_size, "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every,
            "eval_every": args.eval_every, "threads": args.threads, "weights": args.weights,
            "weights_backbone": args.weights_backbone, "checkpoint": args.checkpoint, "strict": args.strict,
            "lr": args.lr, "warmup_iters": args.warmup_iters, "freeze_bn": args.freeze_bn}


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train the fixed detector (resumable: rerun the same command)",
                       description="Train the fixed detector, from scratch or from pretrained weights (--weights, "
                                   "--weights-backbone, --checkpoint). Writes model.pt, config.json, "
                                   "categories.json, train_log.csv, loss_curves.png and checkpoint.pt under --out; "
                                   "rerunning the same command resumes from the last checkpoint.")
    add_dataset_args(t)
    t.add_argument("--out", required=True, help="model folder")
    t.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of frames held out (by image, seeded) for val loss and mAP (default 0.2)")
    _add_training_args(t)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict a data set with a trained model (COCO results JSON)")
    p.add_argument("model", help="model folder written by `qualmet train`")
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="predictions JSON (COCO results list)")
    p.add_argument("--score-threshold", type=float, default=0.001,
                   help="keep detections at or above this score (default 0.001, so AP is not truncated)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    p.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", help="print a trained model's architecture (blocks, shapes, parameters)")
    s.add_argument("model", help="model folder written by `qualmet train`")
    s.add_argument("--diagram", default=None, help="also draw the main blocks with output shapes to this PNG")
    s.set_defaults(func=cmd_summary)

    c = sub.add_parser("crossval", help="out-of-fold predictions: K models, each predicting its held-out fold",
                       description="Train K models, each on K-1 folds (split by image, seeded), and predict each "
                                   "held-out fold. Fold models go to <out stem>_folds/ (or --work); finished folds "
                                   "are reused when the command is rerun.")
    add_dataset_args(c)
    c.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    c.add_argument("--out", required=True, help="out-of-fold predictions JSON (COCO results list)")
    c.add_argument("--work", default=None, help="folder for the fold models (default: <out stem>_folds beside --out)")
    c.add_argument("--executor", default="local", metavar="local|dask|dask:tcp://HOST:PORT",
                   help="where the folds train: one after another here (default), on a local Dask cluster of "
                        "--workers processes, or on the Dask scheduler at an address (its workers must see --work "
                        "at the same path; docs/dask.md)")
    c.add_argument("--workers", type=int, default=2, help="the local Dask cluster's processes (default 2)")
    _add_training_args(c)
    c.set_defaults(func=cmd_crossval)


def cmd_train(args: argparse.Namespace) -> int:
    from ..detector.train import loss_line, train

    res = train(args.dataset, args.out, val_fraction=args.val_fraction, iters=args.iters, seed=args.seed,
                device=args.device, recipe=args.recipe, images=args.images, progress=not args.no_progress,
                **_training_overrides(args))
    last = res.log.iloc[-1] if len(res.log) else None
    if last is not None:
        logger.info(f"trained {res.out_dir}: final {loss_line(last)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import warnings

    from ..atomic import write_json
    from ..detector.predictor import Predictor, SkippedFramesWarning, to_results
    from ..formats import load_coco

    ds = load_coco(args.dataset, images=args.images)
    predictor = Predictor.load(args.model, args.device)
    with warnings.catch_warnings():  # said below as one line, with the exit code
        warnings.simplefilter("ignore", SkippedFramesWarning)
        preds = predictor.predict_dataset(ds, args.score_threshold, args.batch_size,
                                         progress=not args.no_progress)
    write_json(args.out, to_results(preds))
    skipped = predictor.skipped
    logger.info(f"wrote {len(preds)} detections on {len(ds.images) - len(skipped)} of {len(ds.images)} frames to {args.out}")
    if skipped:
        logger.warning(f"{len(skipped)} frame(s) could not be read and have no predictions (evaluate counts their "
                       f"boxes as missed); first: {skipped[0]}")
        return 1
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ..detector.summary import summary

    print(summary(args.model, diagram=args.diagram))
    if args.diagram:
        logger.info(f"wrote {args.diagram}")
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    from ..detector.crossval import crossval

    preds = crossval(args.dataset, folds=args.folds, out=args.out, work_dir=args.work, iters=args.iters,
                     seed=args.seed, device=args.device, recipe=args.recipe, images=args.images,
                     progress=not args.no_progress, executor=args.executor, workers=args.workers,
                     **_training_overrides(args))
    logger.info(f"wrote {len(preds)} out-of-fold detections to {args.out}")
    return 0
