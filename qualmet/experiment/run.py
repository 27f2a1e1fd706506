"""The experiment runner: for each seed, its noise draw (shared, or its own with ``[noise] vary``),
then every arm on it; results.csv, summary.md, contrasts.csv and the forest plot are rewritten after
each finished arm, so an interrupted experiment leaves a readable partial summary and resumes."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import __version__
from ..atomic import write_json, write_text
from ..environment import describe, differences, versions
from ..formats import load_coco
from ..log import logger
from .arms import result_line, run_arm
from .parallel import in_spec_order
from .data import Replicate, load_also_test, prepare_clean, replicate
from .spec import Spec, load_spec

ROW_KEYS = ("n_frames", "n_boxes", "n_wrong", "n_ignore", "n_added", "noise_seed")


def _write_config(spec: Spec, out: Path, quick: bool) -> None:
    env = versions()
    if (out / "config.json").is_file():  # resuming: say if the libraries changed since the last run
        changed = differences(json.loads((out / "config.json").read_text()).get("environment"), env)
        if changed:
            logger.info(f"note: library versions differ from the previous run in this folder ({describe(changed)}); "
                        "arms whose selection changes are retrained")
    write_json(out / "config.json", {"spec": spec.raw, "spec_file": str(spec.path), "quick": quick,
                                     "qualmet_version": __version__, "environment": env}, indent=2)
    if spec.path:
        write_text(out / "spec.toml", spec.path.read_text(encoding="utf-8"))


def run_experiment(spec_path: str | Path, out: str | Path | None = None, quick: bool = False,
                   workers: int | None = None, progress: bool = False, executor: str | None = None) -> Path:
    """Run every arm x seed of an experiment spec and write results.csv, summary.md and summary.png.

    ``executor`` ``"dask"`` (a local cluster of ``workers`` processes, default 2) or
    ``"dask:tcp://HOST:PORT"`` runs the arms as tasks on a Dask cluster (:mod:`.parallel`); the
    default runs them one after another in this process."""
    spec = load_spec(spec_path, quick=quick)
    out = Path(out) if out else Path("experiments") / "results" / (spec.name + ("_quick" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    _write_config(spec, out, quick)
    det = spec.raw["detector"]
    logger.info(f"== experiment {spec.name}{' (quick)' if quick else ''}: {len(spec.arms)} arms x {len(spec.seeds)} seeds, "
                f"budget {spec.raw['budget']}, {det['recipe']} x {det['iters']} iterations"
                f"{', a noise draw per seed' if spec.vary_noise else ''} -> {out}")
    clean_json, test_json = prepare_clean(spec, out)
    test = load_coco(test_json)  # parsed once for every arm x seed
    also_test = load_also_test(spec, out)  # [data.also_test]: the same test frames, other labels
    finished = _summary_writer(spec, out, quick, also_test, t_start)

    if executor is not None and executor != "local":
        from ..dask_executor import parse_executor
        from .parallel import run_arms_on_dask

        _, address = parse_executor(executor)
        # every draw first: they feed every arm (and the arms then run on the cluster in any order)
        draws: dict[int | None, Replicate] = {}
        for seed in spec.seeds:
            key = seed if spec.vary_noise else None
            if key not in draws:
                # the out-of-fold folds go to the same cluster as the arms
                draws[key] = replicate(spec, out, seed, clean_json, test, workers, progress, also_test, executor)
        reps = {seed: draws[seed if spec.vary_noise else None] for seed in spec.seeds}
        for seed, k, r in run_arms_on_dask(spec, out, reps, address, n_workers=workers or 2):
            finished(seed, k, r)
    else:
        held: dict[int | None, Replicate] = {}  # one draw in memory at a time
        for seed in spec.seeds:
            key = seed if spec.vary_noise else None
            if key not in held:
                held = {key: replicate(spec, out, seed, clean_json, test, workers, progress, also_test)}
            for k, arm in enumerate(spec.arms):
                finished(seed, k, run_arm(spec, arm, seed, out, held[key], progress))
    logger.info(f"\n{(out / 'summary.md').read_text()}\nwrote {out} in {time.perf_counter() - t_start:.0f} s")
    return out


def summarize_experiment(spec_path: str | Path, out: str | Path | None = None, quick: bool = False) -> Path:
    """Rewrite results.csv and the summaries from the arms of ``spec_path`` already finished in ``out``
    (a result.json made with the spec's configuration), training nothing: a partial summary to read
    or commit while the rest runs elsewhere, marked PARTIAL when arms are missing."""
    from .. import steps
    from ..errors import QualmetError
    from .arms import arm_config, arm_folder

    spec = load_spec(spec_path, quick=quick)
    out = Path(out) if out else Path("experiments") / "results" / (spec.name + ("_quick" if quick else ""))
    finished = _summary_writer(spec, out, quick, dict(spec.also_test), time.perf_counter())
    n = 0
    for seed in spec.seeds:
        noise_seed = spec.noise_seed(seed) if spec.has_noise else None
        for k, arm in enumerate(spec.arms):
            p = arm_folder(out, arm, seed) / "result.json"
            if not p.is_file():
                continue
            r = json.loads(p.read_text())
            if r.get("config_hash") != steps.fingerprint(arm_config(spec, arm, seed, noise_seed)):
                logger.warning(f"{p}: made with another configuration than {spec_path}'s; left out")
                continue
            finished(seed, k, r)
            n += 1
    if not n:
        raise QualmetError(f"{out}: no arm of {spec_path} has finished there yet")
    _write_config(spec, out, quick)
    logger.info(f"{n} of {len(spec.arms) * len(spec.seeds)} arm runs finished; wrote {out / 'summary.md'}")
    return out


def _summary_writer(spec: Spec, out: Path, quick: bool, also_test: dict, t_start: float) -> Callable[[int, int, dict], None]:
    """``finished(seed, arm index, result)``: log the arm's line and rewrite results.csv and the
    summaries over every result given so far, in the spec's order."""
    from ..summary import COCO_STATS, write_summary

    title = f"{spec.name}{' (quick)' if quick else ''}"
    done: dict[tuple[int, int], dict] = {}  # (seed, arm index) -> result, however the arms are run

    def finished(seed: int, k: int, r: dict) -> None:
        logger.info(result_line(r))
        done[(seed, k)] = r
        results = in_spec_order(done, spec)
        train_s = sum(float(r.get("train_seconds") or 0.0) for r in results)  # resumed arms included
        for name in [None, *also_test]:  # the test split, then each other label set of its frames
            scored = [(r, r if name is None else r.get("also_test", {}).get(name)) for r in results]
            scored = [(r, e) for r, e in scored if e]
            rows = pd.DataFrame([{"arm": r["arm"], "seed": r["seed"], **{c: e["stats"].get(c) for c in COCO_STATS},
                                  **{c: r.get(c) for c in ROW_KEYS}} for r, e in scored])
            per_class = pd.DataFrame([{"arm": r["arm"], "seed": r["seed"], "class": c, "AP": ap}
                                      for r, e in scored for c, ap in (e.get("per_class_AP") or {}).items()])
            if len(rows) and "random" in set(rows.arm):
                labels = f" — test labels: {name} ({spec.also_test[name]})" if name else ""
                write_summary(rows, out, title + labels, contrasts=spec.contrasts, oracle_arms=spec.anchor_arms(),
                              notes=_notes(spec, quick, time.perf_counter() - t_start, train_s, len(rows)),
                              name=name, per_class=per_class)

    return finished


def _notes(spec: Spec, quick: bool, seconds: float, train_s: float, n_runs: int) -> str:
    d, det = spec.raw["data"], spec.raw["detector"]
    data = (f"synthetic pandas, {d['train']} train / {d['test']} clean test frames at {d['size']} px"
            if d.get("source", "synthetic") == "synthetic" else f"{d['source']}")
    draws = (f"a fresh noise draw per seed (noise seed {spec.noise.get('seed', 0)} + the seed)" if spec.vary_noise
             else f"one noise draw (seed {spec.noise.get('seed', 0)}) shared by every seed")
    planned = len(spec.arms) * len(spec.seeds)
    partial = f" PARTIAL: {n_runs} of {planned} arm runs finished." if n_runs < planned else ""
    return (f"Data: {data}; label noise rate {spec.noise.get('rate', 0)} on the training split only, {draws}. "
            f"Budget {spec.raw['budget']} of the training frames (arms with match = \"boxes\" take frames until "
            f"they hold random's box count); "
            + (f"trained by `{det['command']}` ({det['iters']} iterations asked), " if det.get("command") else
               f"detector {det['recipe']}, {det['iters']} iterations from scratch, ")
            + f"seeds {spec.seeds}. Training and scoring the {n_runs} arm run(s): {train_s / 60:.1f} min in all; this "
            f"invocation's wall time: {seconds / 60:.1f} min (a resumed run skips finished arms; data, metrics and "
            f"out-of-fold predictions are not counted in the first figure). qualmet {__version__}.{partial}")
