"""Does pretraining on qualmet's own synthetic frames help a detector fine-tuned on real data, where no
pretrained weights can be downloaded? Pretrain the fixed detector on a large synthetic set, then train
on a real training split from that checkpoint and from scratch at equal iterations, per seed, and
score both on the real test split.

    .venv/bin/python scripts/synthetic_pretraining.py OUT_DIR --train TRAIN --test TEST \\
        [--synth-frames 1000] [--pretrain-iters 800] [--iters 400] [--seeds 0 1 2] [--threads 1]
    .venv/bin/python scripts/synthetic_pretraining.py OUT_DIR --summarize   # the table of what finished

TRAIN and TEST are any data set qualmet loads (e.g. the raccoon CSV splits). Every training is resumed
or skipped by `train` itself, and each finished run writes OUT_DIR/runs/<start>_seed<k>.json, so two
invocations with different --seeds can run side by side. The summary pairs the two starts by seed:
mean difference in AP points with its 95% t interval (qualmet.contrasts.paired_difference).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from qualmet.atomic import write_json, write_text
from qualmet.contrasts import paired_difference
from qualmet.formats import load_dataset

STATS = ("AP", "AP50", "AR100")


def pretrain(out: Path, n_frames: int, iters: int, threads: int) -> Path:
    """The synthetic set (seeded) and the detector trained on it: the checkpoint every fine-tune starts from."""
    from qualmet.detector.train import train
    from qualmet.formats import load_coco
    from qualmet.synth.generate import generate

    synth = out / "synth"
    if not (synth / "train.json").is_file():
        generate(synth, n_train=n_frames, n_test=0, seed=1234)
    train(load_coco(synth / "train.json"), out / "pretrained", val_fraction=0.0, iters=iters, seed=0,
          recipe="ssdlite256", threads=threads)
    return out / "pretrained"


def one(out: Path, start: str, seed: int, train_ds, test_ds, iters: int, threads: int, ckpt: Path | None) -> dict:
    from qualmet.detector.train import train
    from qualmet.evaluate import evaluate

    folder = out / f"{start}_seed{seed}"
    res = train(train_ds, folder, val_fraction=0.0, iters=iters, seed=seed, recipe="ssdlite256", threads=threads,
                **({"checkpoint": str(ckpt)} if ckpt else {}))
    ev = evaluate(test_ds, res.predictor.predict_dataset(test_ds), out=folder / "eval")
    log = pd.read_csv(folder / "train_log.csv")
    row = {"start": start, "seed": seed, **{k: ev["stats"][k] for k in STATS},
           "s_per_iter": round(float(log["elapsed_s"].iloc[-1]) / int(log["iter"].iloc[-1]), 3)}
    write_json(out / "runs" / f"{start}_seed{seed}.json", row, indent=2)
    return row


def summarize(out: Path) -> str:
    rows = pd.DataFrame([json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))])
    cfg = json.loads((out / "config.json").read_text())
    write_text(out / "results.csv", rows.to_csv(index=False))
    lines = [f"# Synthetic pretraining vs from scratch ({cfg['date']})", "",
             f"Pretrained on {cfg['synth_frames']} synthetic frames for {cfg['pretrain_iters']} iterations; then "
             f"{cfg['iters']} iterations on {cfg['train']} from that checkpoint or from scratch; scored on "
             f"{cfg['test']}. ssdlite256, {cfg['threads']} thread(s).", "",
             "| start | seeds | " + " | ".join(STATS) + " | s/iteration |", "|---|---:|" + "---:|" * (len(STATS) + 1)]
    for start, g in rows.groupby("start"):
        lines.append(f"| {start} | {len(g)} | " + " | ".join(f"{g[k].mean():.3f} ± {g[k].std(ddof=1):.3f}"
                                                            for k in STATS) + f" | {g['s_per_iter'].mean():.2f} |")
    if {"scratch", "synthetic"} <= set(rows["start"]):
        lines += ["", "Synthetic − scratch, paired by seed (points, 95% t interval):", ""]
        for k in STATS:
            a = rows[rows.start == "synthetic"].set_index("seed")[k]
            b = rows[rows.start == "scratch"].set_index("seed")[k]
            d = paired_difference(a, b)
            lines.append(f"- {k}: {d['diff'] * 100:+.2f} [{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}], p {d['p']:.3f} "
                         f"({d['n']:.0f} seeds)")
    text = "\n".join(lines) + "\n"
    write_text(out / "summary.md", text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--train")
    ap.add_argument("--test")
    ap.add_argument("--synth-frames", type=int, default=1000)
    ap.add_argument("--pretrain-iters", type=int, default=800)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--starts", nargs="+", default=["scratch", "synthetic"], choices=("scratch", "synthetic"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summarize", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.summarize:
        from datetime import date

        write_json(out / "config.json", {"date": str(date.today()), "train": a.train, "test": a.test,
                                         "synth_frames": a.synth_frames, "pretrain_iters": a.pretrain_iters,
                                         "iters": a.iters, "threads": a.threads}, indent=2)
        train_ds, test_ds = load_dataset(a.train), load_dataset(a.test)
        ckpt = pretrain(out, a.synth_frames, a.pretrain_iters, a.threads) if "synthetic" in a.starts else None
        for seed in a.seeds:
            for start in a.starts:
                one(out, start, seed, train_ds, test_ds, a.iters, a.threads, ckpt if start == "synthetic" else None)
    print(summarize(out))


if __name__ == "__main__":
    main()
