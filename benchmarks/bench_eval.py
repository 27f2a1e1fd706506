"""Speed of the evaluation backends: COCOeval (bbox) stats by pycocotools and by faster-coco-eval, and
the whole ``evaluate()`` (stats + flags + confusion matrix) with each, on a synthetic panda set.

Ground truth: ``qualmet.synth`` frames (one class). Predictions: detector-like, made here from the
ground truth (jittered copies, duplicates, spurious boxes, ``--per-frame`` extra low-score boxes),
the same for both backends. Prints seconds (best of ``--repeat``) and the speed-up, and checks that
the 12 stats are equal. Timings on a shared machine are noisy: run it alone for figures you quote.

    .venv/bin/python benchmarks/bench_eval.py [--frames 300] [--size 192] [--per-frame 30] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from qualmet.evaluate import coco_eval, evaluate, predictions_frame
from qualmet.formats import load_coco
from qualmet.synth import generate


def _predictions(gt, per_frame: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    recs = []
    for r in gt.annotations.itertuples(index=False):
        for _ in range(rng.choice([0, 1, 1, 2])):
            j = rng.normal(0, 0.1, 4) * [r.w, r.h, r.w, r.h]
            recs.append({"image_id": int(r.image_id), "category_id": 1, "bbox": [r.x + j[0], r.y + j[1],
                         max(1.0, r.w + j[2]), max(1.0, r.h + j[3])], "score": float(rng.uniform(0.3, 1.0))})
    for i, w, h in zip(gt.images["id"], gt.images["width"], gt.images["height"]):
        for _ in range(per_frame):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            recs.append({"image_id": int(i), "category_id": 1, "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh),
                                                                        bw, bh], "score": float(rng.uniform(0, 0.5))})
    return predictions_frame(recs)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--per-frame", type=int, default=30, help="extra low-score predictions per frame")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate(tmp, n_train=a.frames, n_test=0, seed=0, size=a.size, workers=1)
        gt = load_coco(paths["train"])
    preds = _predictions(gt, a.per_frame)
    print(f"{len(gt.images)} frames, {len(gt.annotations)} boxes, {len(preds)} predictions; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    ref, _, _ = coco_eval(gt, preds, "pycocotools")
    fast, _, _ = coco_eval(gt, preds, "faster-coco-eval")
    print(f"12 stats equal: {ref == fast} (max |difference| "
          f"{max(abs((ref[k] or 0) - (fast[k] or 0)) for k in ref):.3g})")
    for what, fn in (("COCO stats", lambda b: coco_eval(gt, preds, b)), ("evaluate()", lambda b: evaluate(gt, preds, backend=b))):
        slow = _best(lambda: fn("pycocotools"), a.repeat)
        quick = _best(lambda: fn("faster-coco-eval"), a.repeat)
        print(f"{what:<11} pycocotools {slow:7.3f} s   faster-coco-eval {quick:7.3f} s   speed-up {slow / quick:5.1f}x")


if __name__ == "__main__":
    main()
