"""Size and speed of `qualmet report` on the N-frame synthetic set (default 1,000 frames at 256 px,
30% label noise, every built-in metric): build time, size on disk (index.html, thumbnails, plots),
and, when Playwright and /usr/bin/chromium are installed, the page's load time in headless Chromium
(navigation timing: DOMContentLoaded and the load event, median of 3 cold loads, fresh profile each).
Timings on a shared machine are noisy; run it alone for figures you quote.

    .venv/bin/python benchmarks/bench_report.py [--frames 1000] [--size 256] [--workers 1] [--keep DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from qualmet.noise import corrupt_file
from qualmet.report import build_report
from qualmet.runner import run_metrics
from qualmet.synth import generate

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _mb(paths) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def _load_times(index: Path, runs: int = 3) -> dict[str, float] | None:
    """Median DOMContentLoaded / load-event times (s) over ``runs`` cold loads, or None without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.is_file():
        return None
    dcl, load, wall = [], [], []
    with sync_playwright() as p:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as prof:
                ctx = p.chromium.launch_persistent_context(prof, executable_path=str(CHROMIUM), headless=True,
                                                           args=ARGS, viewport={"width": 1360, "height": 900})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(index.as_uri(), wait_until="load")
                wall.append(time.perf_counter() - t0)
                nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0]; "
                                    "return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
                dcl.append(nav[0] / 1000)
                load.append(nav[1] / 1000)
                ctx.close()
    return {"dcl_s": statistics.median(dcl), "load_s": statistics.median(load), "goto_s": statistics.median(wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1, help="metric-run workers (default 1: a shared machine)")
    ap.add_argument("--keep", default=None, help="build everything under this folder and keep it")
    a = ap.parse_args()
    tmp = None if a.keep else tempfile.TemporaryDirectory()
    root = Path(a.keep or tmp.name)
    t0 = time.perf_counter()
    generate(root / "syn", n_train=a.frames, n_test=0, seed=0, size=a.size, workers=a.workers)
    noisy, manifest, _ = corrupt_file(root / "syn" / "train.json", root / "syn" / "noisy.json", rate=0.3, seed=0)
    run = run_metrics(noisy, out=root / "run", workers=a.workers, progress=False)
    print(f"inputs: {a.frames} frames at {a.size} px, {len(run.objects)} boxes, {len(run.info['metrics'])} metrics "
          f"({time.perf_counter() - t0:.0f} s to generate, corrupt and compute)")

    t0 = time.perf_counter()
    index = build_report(root / "report", run=root / "run", manifest=manifest, progress=False)
    build_s = time.perf_counter() - t0
    rep = index.parent
    files = [p for p in rep.rglob("*") if p.is_file()]
    thumbs = list((rep / "assets" / "thumbs").glob("*.jpg"))
    print(f"report: built in {build_s:.1f} s; {_mb(files):.1f} MB in {len(files)} files: index.html "
          f"{_mb([index]):.2f} MB, {len(thumbs)} thumbnails {_mb(thumbs):.1f} MB "
          f"(objects {_mb([t for t in thumbs if t.name.startswith('o')]):.1f} MB, frames "
          f"{_mb([t for t in thumbs if t.name.startswith('f')]):.1f} MB), plots {_mb((rep / 'assets' / 'plots').glob('*')):.2f} MB")
    lt = _load_times(index)
    if lt is None:
        print("load time: skipped (no playwright or no /usr/bin/chromium)")
    else:
        print(f"load time in headless Chromium (median of 3 cold loads): DOMContentLoaded {lt['dcl_s']:.2f} s, "
              f"load event {lt['load_s']:.2f} s (goto wall {lt['goto_s']:.2f} s)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
