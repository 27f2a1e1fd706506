"""Detector speed and accuracy: training and inference images/s (CPU, and GPU where present), and
the AP the default recipe reaches on the clean synthetic set after its fixed schedule.

    .venv/bin/python benchmarks/bench_detector.py            # full: timing + AP (minutes on CPU)
    .venv/bin/python benchmarks/bench_detector.py --quick    # tiny settings, checks it runs
Figures taken while other work shares the cores are noisy; say so when quoting them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, n_train: int, n_test: int, size: int, seed: int) -> tuple[Path, Path]:
    """Clean synthetic train/test sets: qualmet.synth when available, else the tests' ellipses."""
    try:
        from qualmet.synth import generate
    except ImportError:
        sys.path.insert(0, str(REPO))
        from tests.detector_helpers import ellipses

        print("(qualmet.synth not available: using the tests' ellipse frames)")
        return (ellipses(root / "train", n_train, size, seed, "train"),
                ellipses(root / "test", n_test, size, seed + 1, "test"))
    generate(root, n_train=n_train, n_test=n_test, seed=seed, size=size)
    return root / "train.json", root / "test.json"


def bench_speed(train_json: Path, device: str, iters: int, recipe: str, input_size: int | None) -> None:
    """Seconds per training iteration and training / inference images per second."""
    from qualmet.detector.data import DetectionData, IterationSampler, collate
    from qualmet.detector.predictor import Predictor
    from qualmet.detector.recipe import build_model, get_recipe, param_groups
    from qualmet.formats import load_coco

    rec = get_recipe(recipe, input_size=input_size)
    ds = load_coco(train_json)
    dev = torch.device(device)
    amp = dev.type == "cuda" and rec.amp
    torch.manual_seed(0)
    model = build_model(rec, len(ds.categories)).to(dev).train()
    opt = torch.optim.AdamW(param_groups(model, rec.weight_decay), lr=rec.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    data = DetectionData(ds, rec.input_size)
    for i in range(len(data)):
        data.frame(i)  # decode once up front: time the network, not the disk
    batches = list(IterationSampler(len(data), rec.batch_size, 0, 0, iters + 2, rec.hflip))
    times = []
    for k, b in enumerate(batches):
        imgs, tg = collate([data[x] for x in b])
        imgs = [i.to(dev) for i in imgs]
        tg = [{kk: v.to(dev) for kk, v in t.items()} for t in tg]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", enabled=amp):
            loss = sum(model(imgs, tg).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if k >= 2:  # first iterations warm up allocators / kernels
            times.append(time.perf_counter() - t)
    s_it = sum(times) / len(times)
    print(f"[{device}] {rec.name} @ {rec.input_size}px, batch {rec.batch_size}: train {s_it:.3f} s/iter = "
          f"{rec.batch_size / s_it:.1f} images/s  ({len(times)} iterations)")
    pred = Predictor(model, rec, [{"id": int(c), "name": str(n)} for c, n in zip(ds.categories["id"], ds.categories["name"])], dev)
    frames = [data.frame(i)[0] for i in range(min(len(data), 64))]
    pred.predict(frames[:16])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    pred.predict(frames, batch_size=16)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"[{device}] inference (batch 16, incl. letterbox + NMS): {len(frames) / dt:.1f} images/s, "
          f"{1000 * dt / len(frames):.1f} ms/image")


def bench_ap(train_json: Path, test_json: Path, device: str, iters: int | None, recipe: str,
             input_size: int | None, out: Path) -> None:
    """Train the recipe on the clean set for its fixed schedule and evaluate on the test set."""
    from qualmet.detector.train import train
    from qualmet.evaluate import evaluate
    from qualmet.formats import load_coco

    t = time.perf_counter()
    res = train(train_json, out, iters=iters, seed=0, device=device, recipe=recipe, input_size=input_size,
                progress=False)
    dt = time.perf_counter() - t
    test = load_coco(test_json)
    r = evaluate(test, res.predictor.predict_dataset(test))["stats"]
    n = res.predictor.recipe.iters
    print(f"[{device}] {recipe}: {n} iterations in {dt:.0f} s ({dt / n:.3f} s/iter incl. eval steps); "
          f"test AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  AP75 {r['AP75']:.3f}  AR100 {r['AR100']:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings: only checks that everything runs")
    ap.add_argument("--recipe", default="ssdlite256")
    ap.add_argument("--no-ap", action="store_true", help="skip the (minutes-long) accuracy run")
    args = ap.parse_args()
    torch.manual_seed(0)
    n_train, n_test, size = (16, 8, 128) if args.quick else (200, 100, 256)
    timing_iters = 3 if args.quick else 20
    ap_iters, input_size = (6, 128) if args.quick else (None, None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tr, te = make_data(root / "data", n_train, n_test, size, seed=0)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for dev in devices:
            bench_speed(tr, dev, timing_iters, args.recipe, input_size)
        if not args.no_ap:
            bench_ap(tr, te, devices[-1], ap_iters, args.recipe, input_size, root / "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
