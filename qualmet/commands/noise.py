"""``qualmet corrupt``: inject recorded label noise into a COCO data set."""
from __future__ import annotations

import argparse

from ..log import logger
from ._common import add_dataset_args, add_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corrupt", help="inject label noise and record every error in a manifest",
                       description="Write a noisy copy of a COCO data set (--out) and a manifest of every injected "
                                   "error (loose, shift, squash, spurious, missing, duplicate, wrong_class).")
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="noisy COCO JSON to write (a NOISY.images sidecar beside it names "
                                                "the image folder when that is elsewhere)")
    p.add_argument("--rate", type=float, default=0.3,
                   help="number of errors as a fraction of the clean annotation count (default 0.3)")
    p.add_argument("--types", default=None,
                   help="comma-separated error types (default: all that apply; wrong_class needs 2+ categories)")
    p.add_argument("--shares", default=None,
                   help="relative shares per type, e.g. loose=2,missing=1 (default equal; unnamed types get 0)")
    p.add_argument("--manifest", default=None, help="manifest file, JSON, or CSV if it ends in .csv (default: NOISY.manifest.json beside --out)")
    add_seed(p)
    p.set_defaults(func=cmd_corrupt)


def _parse_shares(text: str | None) -> dict[str, float] | None:
    from ..errors import QualmetError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, sep, val = part.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise QualmetError(f"--shares: expected TYPE=NUMBER, got {part!r}") from None
        if not sep:
            raise QualmetError(f"--shares: expected TYPE=NUMBER, got {part!r}")
    return out


def cmd_corrupt(args: argparse.Namespace) -> int:
    from ..noise import corrupt_file

    shares = _parse_shares(args.shares)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    if shares is not None and types is None:
        types = list(shares)
    noisy_path, manifest_path, counts = corrupt_file(args.dataset, args.out, rate=args.rate, seed=args.seed,
                                                     types=types, shares=shares, manifest=args.manifest,
                                                     images=args.images)
    for t, n in counts.items():
        print(f"{t:12s} {n}")
    print(f"{'total':12s} {sum(counts.values())}")
    logger.info(f"wrote {noisy_path} and {manifest_path}")
    return 0
