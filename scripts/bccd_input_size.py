"""Which input size BCCD's small platelets need, and whether a checkpoint start helps: train the fixed
detector on the whole pool at each size (from scratch, or fine-tuned from --checkpoint), score its
predictions on the test frames against every label set given, per class.

    .venv/bin/python scripts/bccd_input_size.py TRAIN.json OUT_DIR --test relabelled=TEST.json \\
        --test original=TEST_ORIGINAL.json [--sizes 256 320 384] [--seeds 0] [--iters 400] [--threads 1] \\
        [--checkpoint MODEL_DIR [--also-scratch]]

Each training goes to OUT_DIR/s<size>_seed<seed> (scratch) or OUT_DIR/s<size>_ft_seed<seed> (from the
checkpoint) and is resumed (or skipped) by `train` itself, so the script can be stopped and run again.
With both starts, the summary pairs them seed by seed. Seconds per iteration come from each training's own log (the
last row's elapsed time / iterations): they depend on what else the machine ran meanwhile, which
the summary states. Writes results.csv and summary.md under OUT_DIR.
"""
from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from qualmet.atomic import write_json, write_text
from qualmet.contrasts import difference_line, paired_difference
from qualmet.detector.train import train
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco


def one(train_ds, tests: dict, out: Path, size: int, seed: int, iters: int, threads: int,
        ckpt: str | None = None) -> list[dict]:
    folder = out / (f"s{size}_ft_seed{seed}" if ckpt else f"s{size}_seed{seed}")
    res = train(train_ds, folder, val_fraction=0.0, iters=iters, seed=seed, recipe="ssdlite256",
                input_size=size, threads=threads, **({"checkpoint": ckpt} if ckpt else {}))
    log = pd.read_csv(folder / "train_log.csv")
    s_per_iter = float(log["elapsed_s"].iloc[-1]) / int(log["iter"].iloc[-1])
    rows, preds, frames = [], None, None
    for name, test in tests.items():
        ids = tuple(test.images["id"].astype(int))
        if ids != frames:  # label sets of the same frames share one prediction
            preds, frames = res.predictor.predict_dataset(test), ids
        ev = evaluate(test, preds, out=folder / f"eval_{name}")
        st = ev["stats"]
        rows.append({"start": "checkpoint" if ckpt else "scratch", "size": size, "seed": seed, "test": name,
                     "AP": st["AP"], "AP50": st["AP50"], "AR100": st["AR100"],
                     **{f"AP_{k}": v for k, v in ev["per_class_AP"].items()}, "s_per_iter": round(s_per_iter, 3)})
    return rows


def summary(df: pd.DataFrame, args: argparse.Namespace) -> str:
    cols = ["AP", "AP50", "AR100"] + sorted(c for c in df.columns if c.startswith("AP_"))
    lines = [f"# BCCD: input size and start ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node() or 'this machine'})",
             "", f"Train: {args.train} (all frames), ssdlite256, {args.iters} iterations, seeds {args.seeds}, "
             f"{args.threads} torch thread(s). Mean over seeds."
             + (f" Checkpoint start: {args.checkpoint} (class heads rebuilt for BCCD's classes)." if args.checkpoint
                else ""), ""]
    for test, g in df.groupby("test", sort=False):
        m = g.groupby(["start", "size"])[cols + ["s_per_iter"]].mean()
        n = g.groupby(["start", "size"])["seed"].nunique()
        lines += [f"## test labels: {test}", "", "| start | size | seeds | " + " | ".join(cols) + " | s/iteration |",
                  "|---|---:|---:|" + "---:|" * (len(cols) + 1)]
        lines += [f"| {start} | {size} | {n[(start, size)]} | " + " | ".join(f"{r[c]:.3f}" for c in cols)
                  + f" | {r['s_per_iter']:.2f} |" for (start, size), r in m.iterrows()]
        lines += [""] + paired_lines(g, cols)
    return "\n".join(lines)


def paired_lines(g: pd.DataFrame, cols: list[str]) -> list[str]:
    """Checkpoint − scratch at each size, paired by seed (points, 95% t interval, unadjusted p)."""
    out = []
    for size, s in g.groupby("size"):
        by = {k: v.set_index("seed") for k, v in s.groupby("start")}
        if {"scratch", "checkpoint"} <= by.keys():
            out += [f"Checkpoint − scratch at {size} px, paired by seed (points, 95% t interval):", ""]
            for c in cols:
                out.append(difference_line(c, paired_difference(by["checkpoint"][c], by["scratch"][c])))
            out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("out")
    ap.add_argument("--test", action="append", required=True, metavar="NAME=JSON")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", help="fine-tune from this model folder or state dict instead of from scratch")
    ap.add_argument("--also-scratch", action="store_true", help="with --checkpoint: train from scratch too")
    args = ap.parse_args()
    train_ds = load_coco(args.train)
    tests = {k: load_coco(v) for k, v in (t.split("=", 1) for t in args.test)}
    out = Path(args.out)
    write_json(out / "config.json", {**vars(args), "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
                                     "recipe": "ssdlite256", "val_fraction": 0.0}, indent=2)
    starts = [args.checkpoint] + ([None] if args.also_scratch else []) if args.checkpoint else [None]
    rows = [r for size in args.sizes for seed in args.seeds for ckpt in starts
            for r in one(train_ds, tests, out, size, seed, args.iters, args.threads, ckpt)]
    df = pd.DataFrame(rows)
    write_text(out / "results.csv", df.to_csv(index=False))
    text = summary(df, args)
    write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
