"""Throughput of the built-in metric set, its cost relative to decoding, and cleanvision on the same images.

Prints, for 1,000 synthetic frames and for the raccoon set: decode-only frames/s, qualmet frames/s
(all built-in pixel + label metrics, no predictions, one process and all cores), the ratio of
qualmet's time to the decode-only time (target <= 1.5x; on one process, and on all cores against
decoding with as many processes), the same metric functions called directly
without the runner (what the definitions themselves cost), the same for the reference's six metrics
alone, and cleanvision's frames/s for the issue types both compute (dark, light, blurry, low
information, odd aspect ratio), measured in the same run; then where a frame's time goes, metric by
metric, and which metrics fit the target (that set timed on its own).
Each figure is the best of --repeat (3) interleaved timings; on a shared machine they are still noisy,
so run it alone for figures you quote.

    .venv/bin/python benchmarks/bench_metrics.py [--frames 1000] [--no-cleanvision]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO.parent / "shared" / "datasets" / "raccoon" / "annotations"
# the seed article's metrics (confidence aside: it needs predictions)
SEED_METRICS = ["aspect_ratio", "box_tightness", "object_proximity", "max_iou_other", "object_count", "black_white_ratio"]


def synthetic(out: Path, n: int, seed: int = 0) -> Path:
    """1,000 frames from qualmet.synth when it exists, else a local stand-in (pandas on foliage)."""
    try:
        from qualmet.synth import generate

        generate(out, n_train=n, n_test=0, seed=seed, size=(640, 480))
        return out / "train.json"
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n + 1):
        img = np.empty((480, 640, 3), np.uint8)
        img[..., 0] = rng.integers(20, 70, (480, 640))
        img[..., 1] = rng.integers(90, 160, (480, 640))
        img[..., 2] = rng.integers(20, 60, (480, 640))
        img = cv2.GaussianBlur(img, (5, 5), 0)
        for _ in range(int(rng.integers(1, 4))):
            w, h = int(rng.integers(40, 160)), int(rng.integers(40, 140))
            x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
            cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, (240, 240, 240), -1)
            cv2.circle(img, (x + w // 3, y + h // 3), max(3, w // 8), (10, 10, 10), -1)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h]})
        cv2.imwrite(str(out / "images" / f"{i:05d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i, "file_name": f"{i:05d}.jpg", "width": 640, "height": 480})
    path = out / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "panda"}]}))
    return path


def decode_only(paths: list[Path]) -> float:
    from qualmet.imageio import read_image

    t = time.perf_counter()
    for p in paths:
        read_image(p)
    return time.perf_counter() - t


def _decode_many(paths: list[Path]) -> int:
    from qualmet.imageio import read_image

    for p in paths:
        read_image(p)
    return len(paths)


def decode_parallel(paths: list[Path], processes: int) -> float:
    """Decode-only time with `processes` worker processes (pool start-up included, as in a qualmet
    run on that many workers), chunks of 32 frames like the runner's."""
    import multiprocessing as mp

    chunks = [paths[i:i + 32] for i in range(0, len(paths), 32)]
    t = time.perf_counter()
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)  # as the runner does
    with ctx.Pool(processes) as pool:
        assert sum(pool.imap_unordered(_decode_many, chunks)) == len(paths)
    return time.perf_counter() - t


def qualmet_time(ds, workers: int, metrics=None) -> float:
    from qualmet.runner import run_metrics

    t = time.perf_counter()
    run = run_metrics(ds, workers=workers, progress=False, metrics=metrics)
    dt = time.perf_counter() - t
    assert not run.errors, run.errors[:3]
    return dt


def direct_time(ds, paths: list[Path]) -> float:
    """Decode each image and call every built-in's function straight on a context: no runner (no
    chunks, workers, tables, cache, error capture). What the metric definitions themselves cost."""
    from qualmet.imageio import read_image
    from qualmet.context import MetricContext
    from qualmet.discovery import load_registry

    specs = [s for _, s in sorted(load_registry().metrics.items()) if not s.needs_predictions]
    per_frame = [s for s in specs if not s.vectorised]
    anns = ds.annotations.sort_values("image_id", kind="stable")
    groups = {int(k): g for k, g in anns.groupby("image_id", sort=False)}
    frames = [(int(r.id), r.file_name, int(r.width), int(r.height), groups.get(int(r.id), anns.iloc[0:0]), p)
              for r, p in zip(ds.images.itertuples(), paths)]
    boxes = {i: g[["x", "y", "w", "h"]].to_numpy(dtype=np.float64) for i, g in groups.items()}
    t = time.perf_counter()
    for iid, name, w, h, a, p in frames:
        ctx = MetricContext(iid, name, w, h, a, None, read_image(p), boxes=boxes.get(iid, np.zeros((0, 4))))
        for s in per_frame:
            if s.level == "frame" or ctx.n_objects:
                s.func(ctx)
    for s in specs:
        if s.vectorised:
            s.func(ds.annotations, ds.images)
    return time.perf_counter() - t


def cleanvision_time(paths: list[Path], n_jobs: int) -> float | None:
    try:
        from cleanvision import Imagelab
    except ImportError:
        return None
    issues = {"dark": {}, "light": {}, "blurry": {}, "low_information": {}, "odd_aspect_ratio": {}}
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=[str(p) for p in paths])
        lab.find_issues(issues, n_jobs=n_jobs)
    return time.perf_counter() - t


def bench(name: str, ds, use_cleanvision: bool, repeat: int = 3) -> None:
    n = len(ds.images)
    paths = [ds.image_path(f) for f in ds.images["file_name"]]
    cores = os.cpu_count() or 1
    decode_only(paths)  # warm the file cache
    t_dec = t_decn = t_q1 = t_qn = t_same = t_seed = t_direct = float("inf")
    for _ in range(repeat):  # best of `repeat`, interleaved, so a burst of other load hits both sides
        t_dec = min(t_dec, decode_only(paths))
        t_q1 = min(t_q1, qualmet_time(ds, 1))
        t_qn = min(t_qn, qualmet_time(ds, cores) if cores > 1 else t_q1)
        t_decn = min(t_decn, decode_parallel(paths, cores) if cores > 1 else t_dec)
        t_same = min(t_same, qualmet_time(ds, 1, ["brightness", "sharpness", "image_entropy", "aspect_ratio"]))
        t_seed = min(t_seed, qualmet_time(ds, 1, SEED_METRICS))
        t_direct = min(t_direct, direct_time(ds, paths))
    print(f"\n== {name}: {n} frames, {len(ds.annotations)} boxes")
    print(f"decode only (1 process)           {n / t_dec:8.1f} frames/s")
    print(f"qualmet, all built-ins, 1 process {n / t_q1:8.1f} frames/s   time / decode time = {t_q1 / t_dec:.2f}x (target <= 1.5x)")
    print(f"qualmet, all built-ins, {cores} workers {n / t_qn:8.1f} frames/s   decode only, {cores} processes "
          f"{n / t_decn:8.1f} frames/s   time / decode time = {t_qn / t_decn:.2f}x")
    print(f"the same metric functions called directly (no runner) {n / t_direct:8.1f} frames/s   "
          f"time / decode time = {t_direct / t_dec:.2f}x; the runner adds {t_q1 / t_direct - 1:+.0%}")
    print(f"qualmet, cleanvision-like subset  {n / t_same:8.1f} frames/s (brightness, sharpness, image_entropy, aspect_ratio; 1 process)")
    print(f"qualmet, the reference's 6 metrics {n / t_seed:7.1f} frames/s   time / decode time = {t_seed / t_dec:.2f}x "
          f"({', '.join(SEED_METRICS)} without confidence, which needs a model; 1 process)")
    print_cost_per_metric(ds, t_dec, repeat)
    if use_cleanvision:
        t_cv = cleanvision_time(paths, 1)
        if t_cv is None:
            print("cleanvision not installed (pip install cleanvision) - skipped")
        else:
            print(f"cleanvision (dark, light, blurry, low_information, odd_aspect_ratio), 1 job {n / t_cv:8.1f} frames/s")
            print(f"qualmet / cleanvision throughput: all built-ins {t_cv / t_q1:.2f}x, cleanvision-like subset {t_cv / t_same:.2f}x")


def print_cost_per_metric(ds, t_dec: float, repeat: int) -> None:
    """Where a frame's time goes (one run on one process, run.json's seconds per metric), and which
    metrics fit the 1.5x target: the cheapest first, while decode + bookkeeping + their sum stays
    within 1.5x the decode-only time. For whoever chooses between a smaller default set and a
    different plugin model."""
    from qualmet.runner import run_metrics

    n = len(ds.images)
    t = time.perf_counter()
    run = run_metrics(ds, workers=1, progress=False)
    total = time.perf_counter() - t
    sec = dict(run.info["timings"]["seconds_in_workers"])
    decode = sec.pop("decode", 0.0)
    other = max(0.0, total - decode - sum(sec.values()))  # planning, tables, the context, bookkeeping
    ms = lambda s: 1000 * s / n  # noqa: E731
    print(f"per frame, 1 process: decode {ms(decode):.3f} ms (decode-only run: {ms(t_dec):.3f} ms), "
          f"runner bookkeeping {ms(other):.3f} ms, metrics:")
    for name, s in sorted(sec.items(), key=lambda kv: -kv[1]):
        print(f"  {name:24s} {ms(s):7.3f} ms")
    budget = 1.5 * t_dec - decode - other
    fits, used = [], 0.0
    for name, s in sorted(sec.items(), key=lambda kv: kv[1]):
        if used + s > budget:
            break
        fits.append(name)
        used += s
    print(f"within 1.5x the decode time ({ms(budget):.3f} ms per frame left after decode and bookkeeping): "
          f"{len(fits)} of {len(sec)} metrics, the cheapest first: {', '.join(fits) or 'none'}")
    if fits:  # a metric's seconds include the shared intermediates it computed first (ctx.gray, ...): check
        t_fit = min(qualmet_time(ds, 1, fits) for _ in range(repeat))
        print(f"  those {len(fits)} alone, 1 process: {n / t_fit:.1f} frames/s, time / decode time = {t_fit / t_dec:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--no-cleanvision", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings of each")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import qualmet

    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_synthetic:
            t = time.perf_counter()
            path = synthetic(Path(tmp) / "synth", args.frames)
            print(f"generated {args.frames} synthetic frames in {time.perf_counter() - t:.1f} s ({path})")
            bench("synthetic", qualmet.load_coco(path), not args.no_cleanvision, args.repeat)
        if RACCOON.is_dir():
            bench("raccoon", qualmet.load_dataset(RACCOON), not args.no_cleanvision, args.repeat)
        else:
            print(f"raccoon set not found at {RACCOON}; skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
