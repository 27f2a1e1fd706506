"""Metric throughput: local process pool vs a Dask cluster of 2 workers vs 1 worker, same synthetic frames.

Every run computes all built-in metrics (no predictions) with no cache, on frames from
``qualmet.synth``; cluster start-up is timed separately and not counted in frames/s; the first
run on a fresh cluster (workers import qualmet and load the registry) is shown apart from warm runs. Results of
each Dask run are checked equal to the local run. Timings on a shared machine are noisy.

    .venv/bin/python benchmarks/bench_dask.py [--frames 400] [--size 256] [--workers 2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd


def timed_run(ds: Path, executor, workers: int) -> tuple[float, object]:
    from qualmet.runner import run_metrics

    t0 = time.perf_counter()
    run = run_metrics(ds, workers=workers, executor=executor, progress=False)
    return time.perf_counter() - t0, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="local pool processes")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings per setting")
    args = ap.parse_args()

    from qualmet.dask_executor import DaskExecutor
    from qualmet.executors import LocalExecutor
    from qualmet.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, n_train=args.frames, n_test=0, seed=0, size=args.size)
        ds = Path(tmp) / "train.json"
        rows = []
        best, ref = None, None
        for _ in range(args.repeat):
            s, ref = timed_run(ds, LocalExecutor(args.workers), args.workers)
            best = s if best is None else min(best, s)
        rows.append((f"local pool ({args.workers} processes)", best, 0.0))
        for n in (2, 1):
            t0 = time.perf_counter()
            owner = DaskExecutor(n_workers=n)  # owns the cluster; each run below borrows its client
            startup = time.perf_counter() - t0
            plural = "s" if n > 1 else ""
            try:
                for label in ("cold: first run imports on workers", "warm"):
                    best = None
                    for _ in range(args.repeat if label == "warm" else 1):
                        s, run = timed_run(ds, DaskExecutor(client=owner.client), n)
                        pd.testing.assert_frame_equal(run.objects, ref.objects)
                        pd.testing.assert_frame_equal(run.frames, ref.frames)
                        best = s if best is None else min(best, s)
                    rows.append((f"dask {n} worker{plural} ({label})", best, startup if label != "warm" else 0.0))
            finally:
                owner.close()
        base = rows[0][1]
        print(f"{args.frames} frames at {args.size}px, all built-in metrics, best of {args.repeat}")
        print(f"{'setting':52s} {'seconds':>8s} {'frames/s':>9s} {'vs local':>9s} {'startup s':>10s}")
        for name, s, startup in rows:
            print(f"{name:52s} {s:8.2f} {args.frames / s:9.1f} {base / s:8.2f}x {startup:10.2f}")


if __name__ == "__main__":
    main()
