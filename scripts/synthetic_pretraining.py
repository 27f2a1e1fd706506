"""Does pretraining on qualmet's own synthetic frames help a detector fine-tuned on real data, where no
pretrained weights can be downloaded? Pretrain the fixed detector on a large synthetic set, then train
on a real training split from that checkpoint and from scratch at equal iterations, per seed, and
score both on the real test split.

    .venv/bin/python scripts/synthetic_pretraining.py OUT_DIR --train TRAIN --test TEST \\
        [--synth-frames 1000] [--pretrain-iters 800] [--iters 400] [--seeds 0 1 2] [--threads 1]
    .venv/bin/python scripts/synthetic_pretraining.py OUT_DIR --summarize   # the table of what finished
    # fine-tuning schedules from the same checkpoint, each against the default fine-tune ("synthetic"):
    .venv/bin/python scripts/synthetic_pretraining.py OUT_DIR --train TRAIN --test TEST --starts synthetic \
        --schedules low_lr:lr=3e-4 frozen_bn:freeze_bn=true short_warmup:warmup_iters=10

TRAIN and TEST are any data set qualmet loads (e.g. the raccoon CSV splits). Every training is resumed
or skipped by `train` itself, and each finished run writes OUT_DIR/runs/<start>_seed<k>.json, so two
invocations with different --seeds can run side by side. The summary pairs the two starts by seed:
mean difference in AP points with its 95% t interval (qualmet.contrasts.paired_difference). Each
schedule NAME:FIELD=VALUE[,FIELD=VALUE] is a fine-tune from the same checkpoint with those recipe fields
changed; the summary compares each with the default fine-tune, Holm-corrected over the schedules.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from qualmet.atomic import write_json, write_text
from qualmet.contrasts import Contrast, contrast_table, difference_line, paired_difference
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


def parse_schedule(text: str) -> tuple[str, dict]:
    """``low_lr:lr=3e-4,warmup_iters=10`` -> ("low_lr", {"lr": 0.0003, "warmup_iters": 10})."""
    name, _, fields = text.partition(":")
    over = {}
    for item in filter(None, fields.split(",")):
        k, _, v = item.partition("=")
        over[k] = json.loads(v)
    if not name or not over:
        raise SystemExit(f"--schedules {text!r}: expected NAME:FIELD=VALUE[,FIELD=VALUE]")
    return name, over


def one(out: Path, start: str, seed: int, train_ds, test_ds, iters: int, threads: int, ckpt: Path | None,
        overrides: dict | None = None) -> dict:
    from qualmet.detector.train import train
    from qualmet.evaluate import evaluate

    folder = out / f"{start}_seed{seed}"
    res = train(train_ds, folder, val_fraction=0.0, iters=iters, seed=seed, recipe="ssdlite256", threads=threads,
                **({"checkpoint": str(ckpt)} if ckpt else {}), **(overrides or {}))
    ev = evaluate(test_ds, res.predictor.predict_dataset(test_ds), out=folder / "eval")
    log = pd.read_csv(folder / "train_log.csv")
    row = {"start": start, "seed": seed, **{k: ev["stats"][k] for k in STATS},
           "s_per_iter": round(float(log["elapsed_s"].iloc[-1]) / int(log["iter"].iloc[-1]), 3)}
    write_json(out / "runs" / f"{start}_seed{seed}.json", row, indent=2)
    return row


def summarize(out: Path) -> str:
    runs = sorted((out / "runs").glob("*.json"))
    if runs:
        rows = pd.DataFrame([json.loads(p.read_text()) for p in runs])
        write_text(out / "results.csv", rows.to_csv(index=False))
    elif (out / "results.csv").exists():  # a committed result keeps results.csv, not the per-run files
        rows = pd.read_csv(out / "results.csv")
    else:
        raise SystemExit(f"{out}: no finished run to summarize (neither runs/*.json nor results.csv)")
    cfg = json.loads((out / "config.json").read_text())
    lines = [f"# Synthetic pretraining vs from scratch ({cfg['date']})", "",
             (f"Fine-tuned from {cfg['checkpoint']} (pretrained on synthetic frames); rows of earlier runs copied "
              "into runs/ are marked there. " if cfg.get("checkpoint") else
              f"Pretrained on {cfg['synth_frames']} synthetic frames for {cfg['pretrain_iters']} iterations; then ") +
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
            lines.append(difference_line(k, paired_difference(a, b)))
    scheds = cfg.get("schedules", {})
    if scheds and "synthetic" in set(rows["start"]):
        tab = contrast_table(rows.rename(columns={"start": "arm"}), [Contrast(n, "synthetic") for n in scheds],
                             stats=STATS)
        lines += ["", "Fine-tuning schedules − the default fine-tune (lr 1e-3, 50 warm-up iterations, BN trained "
                      "and recalibrated), paired by seed (points, 95% t interval, Holm over the schedules):", ""]
        for _, r in tab.iterrows():
            lines.append(f"- {r['arm']} ({', '.join(f'{k}={v}' for k, v in scheds[r['arm']].items())}): " + "; ".join(
                f"{k} {r[k + '_diff']:+.2f} [{r[k + '_lo']:+.2f}, {r[k + '_hi']:+.2f}], p(Holm) {r[k + '_p_holm']:.3f}, "
                f"{r[k + '_verdict']}" for k in STATS))
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
    ap.add_argument("--starts", nargs="*", default=["scratch", "synthetic"], choices=("scratch", "synthetic"))
    ap.add_argument("--schedules", nargs="*", default=[], help="NAME:FIELD=VALUE[,...] fine-tunes to compare")
    ap.add_argument("--checkpoint", default=None, help="fine-tune from this model folder instead of pretraining")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summarize", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    scheds = dict(parse_schedule(t) for t in a.schedules)
    if not a.summarize:
        from datetime import date

        write_json(out / "config.json", {"date": str(date.today()), "train": a.train, "test": a.test,
                                         "synth_frames": a.synth_frames, "pretrain_iters": a.pretrain_iters,
                                         "iters": a.iters, "threads": a.threads, "checkpoint": a.checkpoint,
                                         "schedules": scheds}, indent=2)
        train_ds, test_ds = load_dataset(a.train), load_dataset(a.test)
        ckpt = (Path(a.checkpoint) if a.checkpoint else pretrain(out, a.synth_frames, a.pretrain_iters, a.threads)
                if "synthetic" in a.starts or scheds else None)
        for seed in a.seeds:
            for start in a.starts:
                one(out, start, seed, train_ds, test_ds, a.iters, a.threads, ckpt if start == "synthetic" else None)
            for name, over in scheds.items():
                one(out, name, seed, train_ds, test_ds, a.iters, a.threads, ckpt, over)
    print(summarize(out))


if __name__ == "__main__":
    main()
