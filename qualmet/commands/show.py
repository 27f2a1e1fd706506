"""``qualmet show``: a PNG grid of random frames with their boxes drawn."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_dataset_args, add_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw random frames with their boxes into one PNG",
                       description="Write a grid of random frames with boxes and class names. With --manifest "
                                   "(from 'qualmet corrupt'), changed/added boxes are red, deleted ones yellow dashed, "
                                   "clean ones green.")
    add_dataset_args(p)
    p.add_argument("--n", type=int, default=20, help="number of frames (default 20)")
    p.add_argument("--cols", type=int, default=5, help="frames per row (default 5)")
    p.add_argument("--out", required=True, help="output image: .png, .jpg or .webp")
    p.add_argument("--manifest", default=None, help="noise manifest (JSON or .csv) from qualmet corrupt; the data set is then the noisy one")
    add_seed(p)
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from ..formats import load_coco
    from ..manifest import load_manifest
    from ..show import show_grid

    ds = load_coco(args.dataset, images=args.images)
    manifest = load_manifest(args.manifest) if args.manifest else None
    unreadable: list = []
    out = show_grid(ds, args.out, n=args.n, seed=args.seed, manifest=manifest, cols=args.cols, unreadable=unreadable)
    logger.info(f"wrote {out}")
    if unreadable:
        shown = min(args.n, len(ds.images))
        logger.warning(f"{len(unreadable)} of {shown} frames could not be read (grey cells); first: "
                       f"{unreadable[0][1]}" + ("; pass --images DIR if the images are elsewhere" if len(unreadable) == shown else ""))
        return 1
    return 0
