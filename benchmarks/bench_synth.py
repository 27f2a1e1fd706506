"""Speed of the synthetic panda generator: frames/s for 1,000 frames at 256 px, all cores and 1 worker.

Also prints where one frame's time goes (rendering vs JPEG encoding) and what PNG would cost instead
(encode time and bytes per frame), and the cost of the atomic (fsync'd) write of each file, the figures behind the choice of JPEG quality 92 for ``images/``.
Timings on a shared machine are noisy; run it alone for figures you quote.

    .venv/bin/python benchmarks/bench_synth.py [--frames 1000] [--size 256] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from qualmet.atomic import write_bytes
from qualmet.synth import generate, render_frame
from qualmet.synth.generate import JPEG_QUALITY


def _generate(n: int, size: int, workers: int) -> float:
    """Seconds to generate ``n`` frames (90% train, 10% test) with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        n_test = n // 10
        t0 = time.perf_counter()
        generate(Path(tmp) / "synth", n_train=n - n_test, n_test=n_test, seed=0, size=size, workers=workers)
        return time.perf_counter() - t0


def _per_frame(size: int, k: int = 100) -> dict[str, float]:
    """Mean per-frame render time, JPEG and PNG encode time (ms) and bytes, atomic write time, over ``k`` frames."""
    render = jpg_t = png_t = write_t = 0.0
    jpg_b = png_b = 0
    tmp = tempfile.TemporaryDirectory()
    for i in range(k):
        t0 = time.perf_counter()
        img, _, _ = render_frame(0, i, size)
        t1 = time.perf_counter()
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        _, j = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        t2 = time.perf_counter()
        _, p = cv2.imencode(".png", bgr)
        t3 = time.perf_counter()
        write_bytes(Path(tmp.name) / f"{i}.jpg", j.tobytes())  # atomic: temp file, fsync, rename
        t4 = time.perf_counter()
        render, jpg_t, png_t, write_t = render + t1 - t0, jpg_t + t2 - t1, png_t + t3 - t2, write_t + t4 - t3
        jpg_b, png_b = jpg_b + j.size, png_b + p.size
    tmp.cleanup()
    return {"render_ms": 1e3 * render / k, "write_ms": 1e3 * write_t / k, "jpeg_ms": 1e3 * jpg_t / k, "png_ms": 1e3 * png_t / k,
            "jpeg_kb": jpg_b / k / 1024, "png_kb": png_b / k / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="the 'all cores' run (default: all)")
    args = ap.parse_args()
    print(f"synthetic pandas: {args.frames} frames at {args.size}x{args.size} px, JPEG quality {JPEG_QUALITY}")
    for workers in (args.workers, 1):
        s = _generate(args.frames, args.size, workers)
        print(f"  {workers:2d} worker(s): {s:6.2f} s  {args.frames / s:7.1f} frames/s")
    f = _per_frame(args.size)
    print(f"  one frame: render {f['render_ms']:.1f} ms, JPEG encode {f['jpeg_ms']:.2f} ms ({f['jpeg_kb']:.1f} KiB), "
          f"PNG encode {f['png_ms']:.2f} ms ({f['png_kb']:.1f} KiB), atomic write {f['write_ms']:.2f} ms")


if __name__ == "__main__":
    main()
