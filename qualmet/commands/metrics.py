"""Metric commands: ``metrics list`` and ``metrics run``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..log import logger
from ._common import add_dataset_args


def _add_plugins(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", default=[], metavar="PATH",
                   help="a metric plugin .py file or a folder of them (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("metrics", help="list or run quality metrics",
                       description="Quality metrics: built-ins, --plugins files, and installed 'qualmet.metrics' entry points.")
    msub = m.add_subparsers(dest="metrics_command", metavar="SUBCOMMAND", help="list or run")
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
    r.add_argument("--match-by", default="id", choices=("id", "file_name"),
                   help="how --predictions name their frames: id (default) or file_name (an image_id that is the "
                        "file's name or stem, as in Ultralytics' predictions.json)")
    r.add_argument("--metrics", default=None, help="comma-separated metric names (default: all that can run)")
    _add_plugins(r)
    r.add_argument("--out", required=True, help="run folder (outputs and chunk cache)")
    r.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    r.add_argument("--chunk-size", type=int, default=None, help="frames per task (default 32)")
    r.add_argument("--executor", default="local", metavar="local|dask|dask:tcp://HOST:PORT",
                   help="where chunks run: local process pool (default), a loopback Dask cluster of --workers "
                        "processes, or the Dask scheduler at an address (needs qualmet[dask]; see docs/dask.md)")
    r.set_defaults(func=cmd_run)


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from ..discovery import load_registry

    reg = load_registry(args.plugins)
    for problem in reg.problems:
        logger.warning(problem)
    specs = reg.select(None)
    if args.json:
        for s in specs:
            print(json.dumps(s.describe()))
    else:
        print(format_table(specs))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..runner import DEFAULT_CHUNK_SIZE, run_metrics

    names = args.metrics.split(",") if args.metrics is not None else None  # "" is an error, not "all"
    run = run_metrics(args.dataset, predictions=args.predictions, metrics=names, plugins=args.plugins,
                      out=args.out, workers=args.workers, images=args.images,
                      chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, executor=args.executor,
                      progress=not args.no_progress, match_by=args.match_by)
    if run.exit_code:  # a run with problems says so even with --quiet
        print(summarise(run, args.out), file=sys.stderr)
    else:
        logger.info(summarise(run, args.out))
    return run.exit_code


def format_table(specs: list) -> str:
    """The ``qualmet metrics list`` table: name, level, needs, worse, version, description, source."""
    rows = [("NAME", "LEVEL", "NEEDS", "WORSE", "VER", "DESCRIPTION", "SOURCE")]
    for s in specs:
        desc = s.description if len(s.description) <= 70 else s.description[:67] + "..."
        rows.append((s.name, s.level, ",".join(sorted(s.needs)) or "-", s.worse, s.version, desc, s.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def _at(error: dict) -> str:
    """" (at FILE:LINE in FUNCTION)" for an error raised in a plugin's code (records cached before
    qualmet recorded the place have none)."""
    return f" (at {error['where']})" if error.get("where") else ""


def summarise(run, out: str | os.PathLike | None = None) -> str:
    """Human summary printed at the end of ``qualmet metrics run``."""
    i = run.info
    c = i["counters"]
    if c["chunks"]:
        failed = c.get("chunks_failed", 0)
        cached = c["chunks"] - c["chunks_computed"] - failed
        work = f"{c['chunks']} chunks: {c['chunks_computed']} computed, {cached} from the cache" \
            + (f", {failed} failed" if failed else "") + f", {c['decodes']} images decoded"
    else:
        work = "no per-frame work"
    vec = [m["name"] for m in i["metrics"] if m.get("vectorised")]
    if vec:
        done = sum(1 for n in vec if c["computed"].get(n))
        work += f"; label-only metrics: {done} computed, {len(vec) - done} from the cache"
    n = len(i["metrics"])
    lines = [f"{c['frames']} frames, {len(run.objects)} objects, {n} metric{'s' if n != 1 else ''}; {work}; "
             f"{i['timings']['total_s']:.1f} s"]
    if i["dataset"]["skipped_items"]:
        lines.append(f"data set: {len(i['dataset']['skipped_items'])} record(s) could not be loaded and were skipped (see run.json)")
    for problem in i.get("plugin_problems", []):
        lines.append(f"warning: {problem}")
    for m in i["errors_by_metric"]:
        errs = [e for e in i["errors"] if e["metric"] == m]
        per_frame = [e for e in errs if e["image_id"] is not None]
        if per_frame:  # the frames' own errors first: a finalize failing after them is usually their consequence
            first = per_frame[0]
            from_cache = sum(1 for e in per_frame if e.get("cached"))
            share = "all" if from_cache == len(per_frame) else from_cache
            again = "" if not from_cache else (f" [{share} of them recorded with cached values: bump the metric's "
                                               "version, or delete the run's chunks/ folder, to try again]")
            lines.append(f"error: metric {m} failed on {len(per_frame)} frame(s); first: image {first['image_id']} "
                         f"({first['file_name']}): {first['error']}{_at(first)}{again}")
        for e in errs:
            if e["image_id"] is None:  # a vectorised or finalize call: one error for the whole data set
                lines.append(f"error: metric {m} failed on the whole data set: {e['error']}{_at(e)}")
    if i["skipped_frames"]:
        sk = i["skipped_frames"][0]
        lines.append(f"skipped: {len(i['skipped_frames'])} frame(s) without pixel metrics; first: image {sk['image_id']}: {sk['reason']}")
    if out is not None:
        lines.append(f"wrote {Path(out) / 'objects.parquet'}, {Path(out) / 'frames.parquet'}, {Path(out) / 'run.json'}")
    return "\n".join(lines)
