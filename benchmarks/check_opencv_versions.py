"""Do the built-in metrics give the same values under other OpenCV releases?

Installs each given opencv-python-headless release into a temporary folder (pip --target, from the
package registry), computes every built-in metric with it on noisy synthetic frames and on the noisy
raccoon training split (when ../shared has it), and prints, per release, the metric columns whose
values differ from the installed OpenCV's. An OpenCV release once moved box_tightness_iou; this is
how the fix was checked. Downloads about 50 MB per release.

    .venv/bin/python benchmarks/check_opencv_versions.py [--versions 5.0.0.93 4.12.0.88] [--frames 300]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RACCOON_SPEC = REPO / "experiments" / "raccoon_filtering.toml"

# computes every built-in on the data sets named on the command line, saves one array per column
PROBE = """
import sys, numpy as np, cv2
from qualmet.formats import load_coco
from qualmet.metric_tables import FRAME_BASE, OBJECT_BASE
from qualmet.runner import run_metrics
out = {}
for path in sys.argv[2:]:
    r = run_metrics(load_coco(path), workers=1, progress=False, entry_points=False)
    for df, base in ((r.objects, OBJECT_BASE), (r.frames, FRAME_BASE)):
        for c in df.columns[len(base):]:
            out[f"{path}:{c}"] = df[c].to_numpy(float)
np.savez(sys.argv[1], **out)
print(cv2.__version__)
"""


def prepare(tmp: Path, frames: int) -> list[str]:
    """Noisy synthetic frames, and the raccoon experiment's noisy split when the data is there."""
    from qualmet.experiment import load_spec, prepare_data
    from qualmet.formats import load_coco, save_coco
    from qualmet.noise import corrupt
    from qualmet.synth import generate

    syn = tmp / "synth"
    generate(syn, n_train=frames, n_test=0, seed=0, size=(640, 480), progress=False)
    noisy, _ = corrupt(load_coco(syn / "train.json"), rate=0.3, seed=0)
    save_coco(noisy, syn / "train_noisy.json")
    paths = [str(syn / "train_noisy.json")]
    try:
        noisy_raccoon, _, _ = prepare_data(load_spec(RACCOON_SPEC), tmp / "raccoon")
        paths.append(str(noisy_raccoon))
    except Exception as exc:  # the shared data set is optional
        print(f"raccoon skipped: {exc}")
    return paths


def values(npz: Path, target: Path | None, data: list[str]) -> str:
    env = None
    if target is not None:
        import os

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", PROBE, str(npz), *data], capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", nargs="+", default=["5.0.0.93", "4.12.0.88"])
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = prepare(tmp, args.frames)
        base = values(tmp / "installed.npz", None, data)
        ref = np.load(tmp / "installed.npz")
        print(f"installed OpenCV {base}: {len(ref.files)} metric columns over {len(data)} data set(s)")
        for v in args.versions:
            target = tmp / f"cv-{v}"
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                            f"opencv-python-headless=={v}"], check=True, capture_output=True)
            got_version = values(tmp / f"{v}.npz", target, data)
            if not v.startswith(got_version):  # the probe must have imported the release asked for
                raise SystemExit(f"asked for OpenCV {v}, the probe imported {got_version}")
            other = np.load(tmp / f"{v}.npz")
            diff = {k: (int((~np.isclose(ref[k], other[k], rtol=0, atol=0, equal_nan=True)).sum()),
                        float(np.nanmax(np.abs(ref[k] - other[k]))))
                    for k in ref.files if not np.array_equal(ref[k], other[k], equal_nan=True)}
            if not diff:
                print(f"OpenCV {got_version}: every column bit-identical")
            for k, (n, worst) in sorted(diff.items()):
                where, column = k.rsplit(":", 1)
                label = "raccoon" if "raccoon" in where else "synthetic"
                print(f"OpenCV {got_version}: {label} {column}: {n} values differ, by up to {worst:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
