"""Peak memory (RSS) of `qualmet metrics run` over 1,000 and 10,000 synthetic frames: does it stay flat?

Each run is a fresh `qualmet metrics run` (all built-in metrics or --metrics, no predictions, empty --out, so
nothing comes from the cache) in its own process, started through a small wrapper that calls the
CLI entry point and then reads the kernel's peak counters (``getrusage``, exact, no sampling):

- parent: ``RUSAGE_SELF.ru_maxrss``, the peak RSS of the process that plans the run, assembles the
  tables and writes the outputs;
- children: ``RUSAGE_CHILDREN.ru_maxrss``, the peak RSS of the largest single worker process (the
  pool's workers are reaped before the CLI returns, so they are all counted). Workers are forked,
  so this includes the parent pages they share copy-on-write.

With psutil installed the benchmark also polls the whole process tree every 50 ms and reports the
largest sum of RSS seen at one moment (an upper bound: shared pages count once per process).
The output tables' own in-memory size (objects + frames DataFrames) is printed beside, since that
part grows with the frames unavoidably. Frames are ``qualmet.synth`` at 256 px, generated once into
``--cache`` and reused; smaller sets are the first N frames of the largest. Timings on a shared
machine are noisy.

    .venv/bin/python benchmarks/bench_memory.py [--frames 1000,10000] [--workers 2] [--metrics A,B] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = r"""
import json, resource, sys, time
from qualmet.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[2:])
wall = time.perf_counter() - t0
to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": rc, "wall_s": wall,
               "parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib,
               "children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib}, fh)
"""


def dataset(cache: Path, frames: list[int], size: int, seed: int) -> dict[int, Path]:
    """COCO JSON per frame count: the largest set is generated once, smaller ones are its first N frames."""
    from qualmet.atomic import write_text
    from qualmet.formats import load_coco, save_coco
    from qualmet.synth import generate

    n_max = max(frames)
    root = cache / f"synth-{size}px-{n_max}-seed{seed}"
    stamp = root / "complete"
    if not stamp.is_file():
        print(f"generating {n_max} synthetic frames at {size} px into {root} (once) ...", flush=True)
        t0 = time.perf_counter()
        generate(root, n_train=n_max, n_test=0, seed=seed, size=size)
        write_text(stamp, f"{n_max} frames in {time.perf_counter() - t0:.0f} s\n")
    full = root / "train.json"
    out = {n_max: full}
    ds = None
    for n in frames:
        if n == n_max:
            continue
        path = root / f"first{n}.json"
        if not path.is_file():
            ds = ds or load_coco(full)
            save_coco(ds.subset(sorted(ds.images["id"])[:n]), path)
        out[n] = path
    return out


def poll_tree(proc: subprocess.Popen, every_s: float = 0.05) -> tuple[float | None, float | None]:
    """(peak RSS summed over the process tree, peak RSS of any one worker) seen while ``proc`` runs, MiB."""
    try:
        import psutil
    except ImportError:
        while proc.poll() is None:
            time.sleep(every_s)
        return None, None
    top = psutil.Process(proc.pid)
    peak_sum = peak_worker = 0.0
    while proc.poll() is None:
        try:
            procs = [top] + top.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss / 2**20)
                except psutil.Error:
                    rss.append(0.0)
            peak_sum = max(peak_sum, sum(rss))
            peak_worker = max([peak_worker] + rss[1:])
        except psutil.Error:
            pass
        time.sleep(every_s)
    return peak_sum, peak_worker


def measure(coco: Path, workers: int, chunk_size: int | None, metrics: str | None = None) -> dict:
    """One fresh metrics run in its own process; returns its peak RSS figures, wall time and table sizes."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="qualmet-mem-") as tmp:
        out = Path(tmp) / "run"
        stats = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-c", WRAPPER, str(stats), "metrics", "run", str(coco), "--out", str(out),
               "--workers", str(workers), "--no-progress"]
        if chunk_size:
            cmd += ["--chunk-size", str(chunk_size)]
        if metrics:
            cmd += ["--metrics", metrics]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        tree_sum, tree_worker = poll_tree(proc)
        err = proc.stderr.read()
        proc.wait()
        if proc.returncode != 0 or not stats.is_file():
            raise SystemExit(f"metrics run failed (rc {proc.returncode}):\n{err[-2000:]}")
        res = json.loads(stats.read_text())
        objs, frames = pd.read_parquet(out / "objects.parquet"), pd.read_parquet(out / "frames.parquet")
        res["objects"], res["frames"] = len(objs), len(frames)
        res["tables_mib"] = (objs.memory_usage(deep=True).sum() + frames.memory_usage(deep=True).sum()) / 2**20
        res["tree_sum_mib"], res["tree_worker_mib"] = tree_sum, tree_worker
        res["run_rc"] = res.pop("rc")
        shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="1000,10000", help="comma-separated frame counts (default 1000,10000)")
    ap.add_argument("--workers", type=int, default=2, help="metric worker processes (default 2)")
    ap.add_argument("--chunk-size", type=int, default=None, help="frames per task (default: the runner's DEFAULT_CHUNK_SIZE, 32)")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names (default: every built-in "
                    "that needs no predictions)")
    ap.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "qualmet-bench-memory"),
                    help="folder for the generated frames, reused between runs")
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.frames.split(",") if x.strip()})
    sets = dataset(Path(args.cache), counts, args.size, args.seed)

    rows = []
    for n in counts:
        r = measure(sets[n], args.workers, args.chunk_size, args.metrics)
        rows.append((n, r))
        print(f"{n:>7} frames: done in {r['wall_s']:.1f} s", flush=True)

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    what = f"--metrics {args.metrics}" if args.metrics else "all built-in metrics"
    print(f"\nqualmet metrics run, {what}, {args.size} px synthetic frames, --workers {args.workers}"
          f"{'' if args.chunk_size is None else f', --chunk-size {args.chunk_size}'}")
    print(f"{'frames':>7} {'objects':>8} {'parent MiB':>10} {'worker MiB':>10} {'tree sum MiB':>12} "
          f"{'tables MiB':>10} {'wall s':>7} {'frames/s':>8}")
    for n, r in rows:
        print(f"{n:>7} {r['objects']:>8} {f(r['parent_mib']):>10} {f(r['children_mib']):>10} "
              f"{f(r['tree_sum_mib']):>12} {r['tables_mib']:>10.1f} {r['wall_s']:>7.1f} {n / r['wall_s']:>8.0f}")
    if len(rows) > 1:
        (n0, a), (n1, b) = rows[0], rows[-1]
        print(f"ratio {n1}/{n0} frames: parent {b['parent_mib'] / a['parent_mib']:.2f}x, "
              f"worker {b['children_mib'] / a['children_mib']:.2f}x"
              + ("" if a["tree_sum_mib"] is None else f", tree sum {b['tree_sum_mib'] / a['tree_sum_mib']:.2f}x")
              + f"; growth per 1,000 extra frames: parent "
              f"{(b['parent_mib'] - a['parent_mib']) / (n1 - n0) * 1000:.1f} MiB, output tables "
              f"{(b['tables_mib'] - a['tables_mib']) / (n1 - n0) * 1000:.2f} MiB")
    print("(peaks from getrusage: exact; tree sum from 50 ms psutil polling; timings noisy on a shared machine)")


if __name__ == "__main__":
    main()
