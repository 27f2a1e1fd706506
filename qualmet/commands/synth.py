"""``qualmet synth``: generate the embedded synthetic panda data set."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate the synthetic panda data set",
                       description="Procedurally drawn pandas in a bamboo forest with exact boxes (COCO).")
    p.add_argument("--out", required=True, help="output folder (images/, train.json, test.json, README.md)")
    p.add_argument("--train", type=int, default=800, help="training frames (default 800)")
    p.add_argument("--test", type=int, default=200, help="test frames (default 200)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    add_seed(p)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..synth import generate

    r = generate(args.out, args.train, args.test, args.seed, args.size, workers=args.workers, progress=not args.no_progress)
    logger.info(f"wrote {r['out']}: {args.train} train frames ({r['n_train_boxes']} boxes), {args.test} test frames "
          f"({r['n_test_boxes']} boxes) in {r['seconds']:.1f} s")
    return 0
