"""Where the time of one experiment arm goes, against the floor of its forward + backward + step.

An arm is what ``qualmet experiment`` does per arm x seed (``experiment._train_subset``): ``train()``
on the arm's subset (no validation split), ``predict_dataset`` on the test split, ``evaluate`` with
its files. The real functions run; thin timers are wrapped around the library calls they make
(decode, letterbox, the dataset's item, the model's forward, ``Tensor.backward``, the optimiser step,
gradient clipping, BN recalibration, log/plot/checkpoint writing, prediction, COCO evaluation), so
the figures are those of the code experiments run. Times are exclusive: a decode inside an item is
counted as decode, not as augmentation.

The floor is a bare loop over the same batches (same sampler, same seed) on tensors decoded and
letterboxed beforehand: forward + backward + optimiser step, nothing else.

    .venv/bin/python benchmarks/bench_arm.py                  # 60 iterations, 2 arms, 64 train / 32 test frames
    .venv/bin/python benchmarks/bench_arm.py --iters 400 --frames 200 --test-frames 100

Several arms run in one process, as in an experiment: frames decoded by the first arm may be
reused by the next. Figures taken while other work shares the cores are noisy; the load average
is printed beside them.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

PHASES = ["decode", "letterbox", "augment + to tensor", "data loader / collate", "forward (+ loss)", "backward",
          "grad clip", "optimiser step", "log + plot", "checkpoints", "build model", "BN recalibration",
          "write outputs", "predict test split", "COCO evaluation", "other"]


class Profile:
    """Exclusive wall time per phase. A phase marked opaque keeps everything inside it as its own
    (BN recalibration runs forwards and decodes too, but they are part of the recalibration)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [name, start, time spent in children, opaque]

    def push(self, name: str, opaque: bool = False) -> bool:
        if any(f[3] for f in self._stack):
            return False
        self._stack.append([name, time.perf_counter(), 0.0, opaque])
        return True

    def pop(self) -> None:
        name, t0, child, _ = self._stack.pop()
        dt = time.perf_counter() - t0
        self.total[name] += dt - child
        self.calls[name] += 1
        if self._stack:
            self._stack[-1][2] += dt

    def wrap(self, name: str, fn: Callable, opaque: bool = False) -> Callable:
        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            if not self.push(name, opaque):
                return fn(*a, **kw)
            try:
                return fn(*a, **kw)
            finally:
                self.pop()
        return timed


class Patches:
    """setattr with undo; a name the module lacks is skipped (the code moved), so the bench keeps running."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, obj: Any, name: str, value: Callable[[Callable], Callable]) -> None:
        if hasattr(obj, name):
            old = getattr(obj, name)
            self._undo.append((obj, name, old))
            setattr(obj, name, value(old))

    def undo(self) -> None:
        for obj, name, old in reversed(self._undo):
            setattr(obj, name, old)
        self._undo.clear()


def instrument(prof: Profile) -> Patches:
    import qualmet.detector.data as data_mod
    import qualmet.detector.predictor as pred_mod
    import qualmet.detector.train as train_mod

    p = Patches()
    p.set(data_mod, "read_image", lambda f: prof.wrap("decode", f))
    p.set(data_mod, "letterbox", lambda f: prof.wrap("letterbox", f))
    p.set(data_mod.DetectionData, "__getitem__", lambda f: prof.wrap("augment + to tensor", f))
    p.set(torch.Tensor, "backward", lambda f: prof.wrap("backward", f))
    p.set(torch.nn.utils, "clip_grad_norm_", lambda f: prof.wrap("grad clip", f))
    p.set(torch.utils.data.DataLoader, "__iter__", lambda f: _timed_iter(prof, f))
    for mod in (train_mod, getattr(train_mod, "_loop_mod", None)):
        if mod is None:
            continue
        p.set(mod, "recalibrate_bn", lambda f: prof.wrap("BN recalibration", f, opaque=True))
        p.set(mod, "loss_curves_png", lambda f: prof.wrap("log + plot", f, opaque=True))
        p.set(mod, "write_text", lambda f: prof.wrap("log + plot", f, opaque=True))
        p.set(mod, "_save_checkpoint", lambda f: prof.wrap("checkpoints", f, opaque=True))
        p.set(mod, "save_checkpoint", lambda f: prof.wrap("checkpoints", f, opaque=True))
        p.set(mod, "write_outputs", lambda f: prof.wrap("write outputs", f, opaque=True))
        p.set(mod, "_write_outputs", lambda f: prof.wrap("write outputs", f, opaque=True))
        p.set(mod, "build_model", lambda f: _forward_timed(prof, prof.wrap("build model", f, opaque=True)))
    p.set(pred_mod.Predictor, "predict_dataset", lambda f: prof.wrap("predict test split", f, opaque=True))
    pushed: list[bool] = []
    p.hooks = (register_optimizer_step_pre_hook(  # type: ignore[attr-defined]
                   lambda *a: pushed.append(prof.push("optimiser step"))),
               register_optimizer_step_post_hook(
                   lambda *a: prof.pop() if pushed.pop() else None))
    return p


def _forward_timed(prof: Profile, build: Callable) -> Callable:
    """build_model whose model times its training-mode forward (prediction stays inside its own phase)."""
    def wrapped(*a: Any, **kw: Any) -> torch.nn.Module:
        model = build(*a, **kw)
        model.forward = prof.wrap("forward (+ loss)", model.forward)
        return model
    return wrapped


def _timed_iter(prof: Profile, orig_iter: Callable) -> Callable:
    """A DataLoader whose ``next()`` is timed (what is not decode/resize/item is loader + collate)."""
    def it(self: Any) -> Any:
        inner = orig_iter(self)

        class Timed:
            def __iter__(s):  # noqa: N805
                return s

            def __next__(s):  # noqa: N805
                prof.push("data loader / collate")
                try:
                    return next(inner)
                finally:
                    prof.pop()
        return Timed()
    return it


def run_arm(train_json: Path, test_json: Path, out: Path, iters: int, seed: int, overrides: dict) -> tuple[dict, float]:
    """One arm as experiment._train_subset runs it; returns (phase -> seconds, wall seconds)."""
    from qualmet.detector.train import train
    from qualmet.evaluate import evaluate
    from qualmet.formats import load_coco

    prof = Profile()
    patches = instrument(prof)
    try:
        t0 = time.perf_counter()
        res = train(load_coco(train_json), out / "model", val_fraction=0.0, iters=iters, seed=seed,
                    device="cpu", progress=False, **overrides)
        test = load_coco(test_json)
        preds = res.predictor.predict_dataset(test, progress=False)
        prof.push("COCO evaluation", opaque=True)
        ev = evaluate(test, preds, out=out / "eval")
        prof.pop()
        wall = time.perf_counter() - t0
    finally:
        pre, post = patches.hooks  # type: ignore[attr-defined]
        pre.remove()
        post.remove()
        patches.undo()
    phases = dict(prof.total)
    phases["other"] = wall - sum(phases.values())
    print(f"  arm seed {seed}: {wall:.1f} s, test AP50 {ev['stats']['AP50'] or 0:.3f}", flush=True)
    return phases, wall


def floor(train_json: Path, iters: int, seed: int, overrides: dict) -> float:
    """Forward + backward + step over the arm's batches, on tensors prepared beforehand (seconds)."""
    from qualmet.detector.data import DetectionData, IterationSampler, collate
    from qualmet.detector.recipe import build_model, get_recipe, param_groups
    from qualmet.formats import load_coco

    rec = get_recipe("ssdlite256", **overrides)
    ds = load_coco(train_json)
    data = DetectionData(ds, rec.input_size)
    batches = list(IterationSampler(len(data), rec.batch_size, seed, 0, iters, rec.hflip))
    items = {k: data[k] for b in batches for k in b}  # each (frame, flip) once: the batches share them
    prepared = [collate([items[k] for k in b]) for b in batches]
    torch.manual_seed(seed)
    model = build_model(rec, len(ds.categories)).train()
    opt = torch.optim.AdamW(param_groups(model, rec.weight_decay), lr=rec.lr)
    t0 = time.perf_counter()
    for imgs, tg in prepared:
        loss = sum(model(imgs, tg).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def make_data(root: Path, n_train: int, n_test: int, size: int) -> tuple[Path, Path]:
    from qualmet.synth import generate

    g = generate(root, n_train=n_train, n_test=n_test, seed=0, size=size)
    return Path(g["train"]), Path(g["test"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=60, help="training iterations per arm (experiments use 400-500)")
    ap.add_argument("--arms", type=int, default=2, help="arms run one after another in this process (seeds 0..)")
    ap.add_argument("--frames", type=int, default=64, help="synthetic training frames")
    ap.add_argument("--test-frames", type=int, default=32, help="synthetic test frames")
    ap.add_argument("--size", type=int, default=256, help="synthetic frame side in pixels")
    ap.add_argument("--input-size", type=int, default=None, help="recipe input size (default: the recipe's, 256)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"input_size": args.input_size} if args.input_size else {}
    load0 = os.getloadavg()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} CPUs, load {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; {args.iters} iterations, "
          f"{args.frames} train / {args.test_frames} test frames of {args.size} px", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tr, te = make_data(root / "data", args.frames, args.test_frames, args.size)
        arms = [run_arm(tr, te, root / f"arm{s}", args.iters, s, overrides) for s in range(args.arms)]
        fl = floor(tr, args.iters, 0, overrides)
    load1 = os.getloadavg()
    head = "| phase | " + " | ".join(f"arm {k + 1} s" for k in range(len(arms))) + " |"
    print("\n" + head + "\n|---|" + "---:|" * len(arms))
    for name in PHASES:
        vals = [a[0].get(name, 0.0) for a in arms]
        if any(abs(v) >= 0.005 for v in vals):
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print("| **arm total** | " + " | ".join(f"**{w:.1f}**" for _, w in arms) + " |")
    print(f"| floor (fwd+bwd+step, pre-decoded) | {fl:.1f} |" + " |" * (len(arms) - 1))
    print("| **arm / floor** | " + " | ".join(f"**{w / fl:.2f}x**" for _, w in arms) + " |")
    loop = [sum(a[0].get(n, 0.0) for n in PHASES[:10]) for a in arms]
    print("| training loop / floor | " + " | ".join(f"{v / fl:.2f}x" for v in loop) + " |")
    print(f"\nload average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at the end "
          f"(floor {fl / args.iters:.3f} s/iter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
