"""Which input size BCCD's small platelets need: train the fixed detector on the whole pool at each
size, score its predictions on the test frames against every label set given, per class.

    .venv/bin/python scripts/bccd_input_size.py TRAIN.json OUT_DIR --test relabelled=TEST.json \\
        --test original=TEST_ORIGINAL.json [--sizes 256 320 384] [--seeds 0] [--iters 400] [--threads 1]

Each training goes to OUT_DIR/s<size>_seed<seed> and is resumed (or skipped) by `train` itself, so the
script can be stopped and run again. Seconds per iteration come from each training's own log (the
last row's elapsed time / iterations): they depend on what else the machine ran meanwhile, which
the summary states. Writes results.csv and summary.md under OUT_DIR.
"""
from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from qualmet.atomic import write_text
from qualmet.detector.train import train
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco


def one(train_ds, tests: dict, out: Path, size: int, seed: int, iters: int, threads: int) -> list[dict]:
    folder = out / f"s{size}_seed{seed}"
    res = train(train_ds, folder, val_fraction=0.0, iters=iters, seed=seed, recipe="ssdlite256",
                input_size=size, threads=threads)
    log = pd.read_csv(folder / "train_log.csv")
    s_per_iter = float(log["elapsed_s"].iloc[-1]) / int(log["iter"].iloc[-1])
    rows, preds, frames = [], None, None
    for name, test in tests.items():
        ids = tuple(test.images["id"].astype(int))
        if ids != frames:  # label sets of the same frames share one prediction
            preds, frames = res.predictor.predict_dataset(test), ids
        ev = evaluate(test, preds, out=folder / f"eval_{name}")
        st = ev["stats"]
        rows.append({"size": size, "seed": seed, "test": name, "AP": st["AP"], "AP50": st["AP50"], "AR100": st["AR100"],
                     **{f"AP_{k}": v for k, v in ev["per_class_AP"].items()}, "s_per_iter": round(s_per_iter, 3)})
    return rows


def summary(df: pd.DataFrame, args: argparse.Namespace) -> str:
    cols = ["AP", "AP50", "AR100"] + sorted(c for c in df.columns if c.startswith("AP_"))
    lines = [f"# BCCD input size ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node() or 'this machine'})",
             "", f"Train: {args.train} (all frames), ssdlite256, {args.iters} iterations, seeds {args.seeds}, "
             f"{args.threads} torch thread(s). Mean over seeds.", ""]
    for test, g in df.groupby("test", sort=False):
        m = g.groupby("size")[cols + ["s_per_iter"]].mean()
        lines += [f"## test labels: {test}", "", "| size | " + " | ".join(cols) + " | s/iteration |",
                  "|---:|" + "---:|" * (len(cols) + 1)]
        lines += [f"| {size} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {r['s_per_iter']:.2f} |"
                  for size, r in m.iterrows()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("out")
    ap.add_argument("--test", action="append", required=True, metavar="NAME=JSON")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    train_ds = load_coco(args.train)
    tests = {k: load_coco(v) for k, v in (t.split("=", 1) for t in args.test)}
    out = Path(args.out)
    rows = [r for size in args.sizes for seed in args.seeds
            for r in one(train_ds, tests, out, size, seed, args.iters, args.threads)]
    df = pd.DataFrame(rows)
    write_text(out / "results.csv", df.to_csv(index=False))
    text = summary(df, args)
    write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
