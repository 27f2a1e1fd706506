"""Metric commands: ``metrics list`` and ``metrics run``."""
from __future__ import annotations

import argparse
import sys

from ._common import add_dataset_args


def _add_plugins(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", default=[], metavar="PATH",
                   help="a metric plugin .py file or a folder of them (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("metrics", help="list or run quality metrics",
                       description="Quality metrics: built-ins, --plugins files, and installed 'qualmet.metrics' entry points.")
    msub = m.add_subparsers(dest="metrics_command", metavar="SUBCOMMAND")
    m.set_defaults(func=lambda a: (m.print_help(), 2)[1])

    ls = msub.add_parser("list", help="show every available metric (name, level, needs, worse, description, source)")
    _add_plugins(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per metric")
    ls.set_defaults(func=cmd_list)

    r = msub.add_parser("run", help="compute metrics into objects.parquet, frames.parquet and run.json",
                        description="Compute metrics on a COCO data set. Rerunning into the same --out reuses "
                                    "finished chunks (also after Ctrl-C or a crash). Exit 1 if a metric raised or a frame was skipped.")
    add_dataset_args(r)
    r.add_argument("--predictions", default=None, help="COCO results JSON (needed by confidence, missed_by_labels)")
    r.add_argument("--metrics", default=None, help="comma-separated metric names (default: all that can run)")
    _add_plugins(r)
    r.add_argument("--out", required=True, help="run folder (outputs and chunk cache)")
    r.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    r.add_argument("--chunk-size", type=int, default=None, help="frames per task (default 32)")
    r.add_argument("--executor", default="local", metavar="local|dask|dask:tcp://HOST:PORT",
                   help="where chunks run: local process pool (default), a loopback Dask cluster of --workers "
                        "processes, or the Dask scheduler at an address (needs qualmet[dask]; see docs/dask.md)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from ..registry import format_table, load_registry

    reg = load_registry(args.plugins)
    for problem in reg.problems:
        print(f"qualmet: warning: {problem}", file=sys.stderr)
    specs = reg.select(None)
    if args.json:
        for s in specs:
            print(json.dumps(s.describe()))
    else:
        print(format_table(specs))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..runner import DEFAULT_CHUNK_SIZE, run_metrics, summarise

    names = args.metrics.split(",") if args.metrics is not None else None  # "" is an error, not "all"
    run = run_metrics(args.dataset, predictions=args.predictions, metrics=names, plugins=args.plugins,
                      out=args.out, workers=args.workers, images=args.images,
                      chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, executor=args.executor,
                      progress=not args.no_progress)
    print(summarise(run, args.out), file=sys.stderr if run.exit_code else sys.stdout)
    return run.exit_code
