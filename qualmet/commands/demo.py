"""``qualmet demo``: the main job of ``make demo``."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole loop on the embedded synthetic data set",
                       description="Generate data, inject label noise, compute metrics, select, train, evaluate, report.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--full", action="store_true", help="run the full experiment instead of its quick version (hours on 2 cores)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import demo

    demo(args.out, quick=not args.full, progress=not args.no_progress)
    return 0
