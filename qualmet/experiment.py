"""The experiment runner: for each arm x seed, select a training subset under the same budget,
train the fixed detector, predict the clean test split and score it with pycocotools.

Data flows one way: data -> noise -> metrics -> select -> train -> evaluate -> summary. Each arm's
result is written as soon as it finishes (``arms/<arm>/seed<k>/result.json``) and a rerun skips
finished arms whose configuration is unchanged, so an interrupted experiment resumes.
"""
from __future__ import annotations

import copy
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__, steps
from .atomic import write_json, write_text
from .environment import describe, differences, digest, versions
from .errors import QualmetError
from .formats import load_coco, save_coco
from .select import Strategy

DEFAULTS: dict[str, Any] = {
    "budget": 0.25,
    "seeds": [0, 1, 2],
    "data": {"source": "synthetic", "train": 800, "test": 200, "size": 256, "seed": 0},
    "noise": {"rate": 0.3, "seed": 0},
    "detector": {"recipe": "ssdlite256", "iters": 600},
    "predictions": {"folds": 3},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass
class Spec:
    """A resolved experiment spec (the TOML file with defaults and, with --quick, its [quick] table)."""

    name: str
    raw: dict[str, Any]
    path: Path | None = None

    @property
    def arms(self) -> list[dict[str, Any]]:
        return self.raw["arms"]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.raw["seeds"]]

    def metrics_needed(self) -> list[str]:
        """Metrics the arms rank by, plus any listed under ``metrics``."""
        names = list(self.raw.get("metrics", []))
        for a in self.arms:
            names += [a["metric"]] if a.get("metric") else []
            names += list(a.get("metrics", []))
        return list(dict.fromkeys(names))


def load_spec(path: str | Path, quick: bool = False) -> Spec:
    """Read an experiment TOML; ``quick`` applies its ``[quick]`` overrides (``arms`` there lists arm names)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QualmetError(f"{p}: experiment spec not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise QualmetError(f"{p}: malformed TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise QualmetError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise QualmetError(f"{p}: cannot read the experiment spec ({exc.strerror or exc})") from None
    quick_over = raw.pop("quick", {})
    spec = _merge(DEFAULTS, raw)
    if quick:
        keep = quick_over.pop("arms", None)
        spec = _merge(spec, quick_over)
        if keep is not None:
            names = {a.get("name") for a in spec.get("arms", [])}
            missing = [k for k in keep if k not in names]
            if missing:
                raise QualmetError(f"{p}: [quick] arms names unknown arm(s) {', '.join(missing)}")
            spec["arms"] = [a for a in spec["arms"] if a.get("name") in keep]
    if not spec.get("arms"):
        raise QualmetError(f"{p}: no [[arms]] defined")
    seen = set()
    for n, a in enumerate(spec["arms"]):
        if "name" not in a:
            raise QualmetError(f"{p}: arms[{n}] needs a 'name'")
        if a["name"] in seen:
            raise QualmetError(f"{p}: duplicate arm name {a['name']!r}")
        clash = next((b for b in seen if _slug(b) == _slug(a["name"])), None)
        if clash is not None:  # both would train into arms/<folder>/
            raise QualmetError(f"{p}: arm names {clash!r} and {a['name']!r} map to the same folder "
                               f"arms/{_slug(a['name'])}; rename one")
        seen.add(a["name"])
        Strategy.from_dict(a)  # validate early: a typo fails before any training
    if "random" not in seen:
        raise QualmetError(f"{p}: an experiment needs an arm named 'random' (the baseline)")
    seeds = spec["seeds"]
    if not isinstance(seeds, list) or len(seeds) < 1:
        raise QualmetError(f"{p}: 'seeds' must list at least one seed")
    bad = [v for v in seeds if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise QualmetError(f"{p}: 'seeds' must be whole numbers from 0 up, got {bad[0]!r}")
    dup = sorted({v for v in seeds if seeds.count(v) > 1})
    if dup:  # each seed is one paired comparison with random: a repeat would train twice and pair nothing
        raise QualmetError(f"{p}: 'seeds' lists {', '.join(map(str, dup))} more than once")
    out = Spec(name=str(spec.get("name", p.stem)), raw=spec, path=p)
    _check_spec(out)
    return out


# the keys a spec may use, per table; anything else is a typo that would otherwise be ignored
SPEC_KEYS = {
    "": {"name", "description", "budget", "seeds", "data", "noise", "detector", "predictions", "arms", "metrics"},
    "data": {"source", "train", "test", "size", "seed", "format", "test_source", "test_fraction"},
    "noise": {"rate", "seed", "types"},
    "predictions": {"folds", "iters"},
}


def _check_spec(s: Spec) -> None:
    """Unknown keys, recipe fields, metric names and the budget fail here, before any data is made
    or any model trained."""
    from .select import check_budget

    spec, p = s.raw, s.path
    for table, allowed in SPEC_KEYS.items():
        got = spec if table == "" else spec.get(table) or {}
        if not isinstance(got, dict):
            raise QualmetError(f"{p}: [{table}] must be a table")
        unknown = sorted(set(got) - allowed)
        if unknown:
            where = f"[{table}]" if table else "the top level"
            raise QualmetError(f"{p}: unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}")
    from .detector.recipe import get_recipe

    det = dict(spec["detector"])
    try:
        get_recipe(str(det.pop("recipe", "ssdlite256")), **{k: v for k, v in det.items() if k != "val_fraction"})
    except (QualmetError, TypeError) as exc:
        raise QualmetError(f"{p}: [detector]: {exc}") from None
    try:
        check_budget(spec["budget"])
    except QualmetError as exc:
        raise QualmetError(f"{p}: {exc}") from None
    _known_metrics(s)


def _known_metrics(spec: Spec):
    """The registry, after checking it has every metric ``spec`` needs (an error naming the others)."""
    from .registry import load_registry

    reg = load_registry()
    unknown = [m for m in spec.metrics_needed() if m not in reg]
    if unknown:
        raise QualmetError(f"{spec.path}: unknown metric(s) {reg.hint(unknown)}; see `qualmet metrics list`")
    return reg


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _log(msg: str) -> None:
    print(msg, flush=True)


def prepare_data(spec: Spec, out: Path) -> tuple[Path, Path, Path | None]:
    """Make (noisy train COCO, clean test COCO, noise manifest or None) under ``out/data``."""
    from .formats import load_dataset

    d, noise = spec.raw["data"], spec.raw.get("noise") or {}
    data_dir = out / "data"
    cfg = {"data": d, "noise": noise, "libraries": digest()}  # generated frames depend on numpy and OpenCV
    noisy, test, manifest = data_dir / "train_noisy.json", data_dir / "test.json", data_dir / "manifest.json"
    clean = data_dir / "train.json"
    if steps.done(data_dir, cfg, [noisy, test]):
        return noisy, test, manifest if manifest.exists() else None
    data_dir.mkdir(parents=True, exist_ok=True)
    if d.get("source", "synthetic") == "synthetic":
        from .synth import generate

        _log(f"generating {d['train']} train + {d['test']} test synthetic frames ({d['size']} px, seed {d['seed']})")
        generate(data_dir, n_train=int(d["train"]), n_test=int(d["test"]), seed=int(d["seed"]), size=d["size"],
                 progress=False)
    else:  # a real data set: a path in any supported format, with a test split given or carved out by seed
        import numpy as np

        base = spec.path.parent if spec.path else Path.cwd()
        src = (base / d["source"]).resolve()
        full = load_dataset(src, fmt=d.get("format", "auto"))
        if d.get("test_source"):
            test_src = (base / d["test_source"]).resolve()
            tr, te = full, load_dataset(test_src, fmt=d.get("format", "auto"))
            have = dict(zip(te.categories["id"].astype(int), te.categories["name"].astype(str)))
            wrong = [(int(i), str(n)) for i, n in zip(tr.categories["id"], tr.categories["name"]) if have.get(int(i)) != str(n)]
            if wrong:  # the models predict the training file's categories; evaluate would refuse them after training
                raise QualmetError(f"{test_src}: its categories differ from those of {src} (first: id {wrong[0][0]} "
                                   f"{wrong[0][1]!r}, which it {'names ' + repr(have[wrong[0][0]]) if wrong[0][0] in have else 'lacks'}); "
                                   "the test split must use the training data's category ids and names")
        else:
            ids = np.sort(full.images["id"].to_numpy())
            rng = np.random.default_rng(int(d.get("seed", 0)))
            n_test = int(round(len(ids) * float(d.get("test_fraction", 0.2))))
            test_ids = set(rng.choice(ids, n_test, replace=False).tolist())
            tr = full.subset([i for i in ids if i not in test_ids])
            te = full.subset(sorted(test_ids))
        _log(f"{src}: {len(tr.images)} train / {len(te.images)} test frames")
        save_coco(tr, clean)
        save_coco(te, test)
    if noise and float(noise.get("rate", 0)) > 0:
        from .noise import corrupt, save_manifest

        noisy_ds, man = corrupt(load_coco(clean), rate=float(noise["rate"]), seed=int(noise.get("seed", 0)),
                                types=noise.get("types"))
        save_coco(noisy_ds, noisy)
        save_manifest(man, manifest)
        _log(f"label noise: {len(man)} changes at rate {noise['rate']} ({man['type'].value_counts().to_dict()})")
    else:
        save_coco(load_coco(clean), noisy)
        manifest.unlink(missing_ok=True)  # an earlier run's noise: these labels have none
    steps.stamp(data_dir, cfg)
    return noisy, test, manifest if manifest.exists() else None


def compute_metrics(spec: Spec, out: Path, noisy: Path, workers: int | None, progress: bool):
    """Run the metrics the arms need (out-of-fold predictions first, when a metric needs them)."""
    from .runner import run_metrics

    reg = _known_metrics(spec)
    names = spec.metrics_needed()
    preds = None
    if any("predictions" in reg[m].needs for m in names):
        p = spec.raw["predictions"]
        oof = out / "oof" / "preds_oof.json"
        cfg = {"predictions": p, "detector": spec.raw["detector"], "data": spec.raw["data"], "noise": spec.raw.get("noise"),
               "libraries": digest()}  # a torch upgrade retrains the fold models
        if not steps.done(out / "oof", cfg, [oof]):
            from .detector.crossval import crossval

            _log(f"out-of-fold predictions: {p['folds']} folds x {p.get('iters', spec.raw['detector']['iters'])} iterations")
            det = spec.raw["detector"]
            crossval(load_coco(noisy), folds=int(p["folds"]), out=oof, work_dir=out / "oof" / "folds",
                     iters=int(p.get("iters", det["iters"])), seed=0, recipe=det["recipe"], progress=progress,
                     **{k: v for k, v in det.items() if k not in ("recipe", "iters", "val_fraction")})
            steps.stamp(out / "oof", cfg)
        preds = oof
    _log(f"metrics: {', '.join(names)}")
    run = run_metrics(load_coco(noisy), predictions=preds, metrics=names, out=out / "metrics", workers=workers,
                      progress=progress)
    return run


def _train_subset(subset_json: Path, test, arm_dir: Path, spec: Spec, seed: int, progress: bool) -> dict:
    from .detector.train import train
    from .evaluate import evaluate

    det = spec.raw["detector"]
    overrides = {k: v for k, v in det.items() if k not in ("recipe", "iters", "val_fraction")}  # e.g. input_size
    res = train(load_coco(subset_json), arm_dir / "model", val_fraction=float(det.get("val_fraction", 0.0)),
                iters=int(det["iters"]), seed=seed, recipe=det["recipe"], progress=progress, **overrides)
    preds = res.predictor.predict_dataset(test, progress=False)
    ev = evaluate(test, preds, out=arm_dir / "eval")
    return dict(ev["stats"])  # None where COCO cannot compute a stat (e.g. no large objects)


def run_arm(spec: Spec, arm: dict, seed: int, out: Path, run, noisy_json: Path, test,
            manifest: Path | None, progress: bool) -> dict:
    """Select, train, evaluate one arm for one seed; resumable (skips when result.json matches)."""
    from .noise import load_manifest, restore_images
    from .select import select

    arm_dir = out / "arms" / _slug(arm["name"]) / f"seed{seed}"
    cfg = {"arm": arm, "seed": seed, "budget": spec.raw["budget"], "detector": spec.raw["detector"],
           "data": spec.raw["data"], "noise": spec.raw.get("noise")}
    result_path = arm_dir / "result.json"
    noisy = load_coco(noisy_json)
    strategy = Strategy.from_dict(arm)
    sel = select(run, noisy.images["id"], strategy, spec.raw["budget"], seed)
    restored = sel.relabel_images if arm.get("oracle") else []
    fingerprint = selection_hash(sel.image_ids, restored, sel.drop_annotations)
    if result_path.exists():
        prev = json.loads(result_path.read_text())
        if prev.get("config_hash") == steps.fingerprint(cfg):
            if prev.get("selection_hash") == fingerprint:
                _log(f"  {arm['name']} seed {seed}: done before (AP {prev['stats']['AP'] or 0:.3f}), skipped")
                return prev
            # same configuration, other training data: the metric values changed (code or library versions)
            _log(f"  {arm['name']} seed {seed}: the metrics now select other frames or boxes than the recorded run; "
                 "retraining")
    subset = noisy.subset(sel.image_ids)
    if sel.drop_annotations:
        subset.annotations = subset.annotations[~subset.annotations["id"].isin(sel.drop_annotations)].reset_index(drop=True)
    if arm.get("oracle"):
        if manifest is None:
            raise QualmetError(f"arm {arm['name']!r}: an oracle arm needs a noise manifest (the spec has no [noise])")
        subset = restore_images(subset, load_manifest(manifest), restored)
    arm_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale_training(arm_dir, {"selection_hash": fingerprint, "dataset_hash": steps.dataset_hash(subset)})
    subset_json = arm_dir / "subset.json"
    save_coco(subset, subset_json)
    sel.reasons.to_csv(arm_dir / "reasons.csv.tmp", index=False)
    Path(arm_dir / "reasons.csv.tmp").replace(arm_dir / "reasons.csv")
    t0 = time.perf_counter()
    stats = _train_subset(subset_json, test, arm_dir, spec, seed, progress)
    result = {"arm": arm["name"], "seed": seed, "config_hash": steps.fingerprint(cfg), "config": cfg, "stats": stats,
              "n_frames": len(sel.image_ids), "n_boxes": int(len(subset.annotations)),
              "dropped_annotations": len(sel.drop_annotations), "train_seconds": round(time.perf_counter() - t0, 1),
              "selection_hash": fingerprint, "qualmet_version": __version__, "environment": versions()}
    write_json(result_path, result, indent=2)  # written last: its presence means the arm is complete
    _log(f"  {arm['name']} seed {seed}: AP {stats['AP'] or 0:.3f}  AP50 {stats['AP50'] or 0:.3f}  AR100 {stats['AR100'] or 0:.3f} "
         f"({result['train_seconds']:.0f} s)")
    return result


def _clear_stale_training(arm_dir: Path, want: dict) -> None:
    """Keep ``arm_dir/model`` only when it was trained (or interrupted) on exactly this arm's data:
    a resumed experiment whose arm now trains on other frames or labels starts that model afresh
    instead of resuming (or reusing) the old one. ``training.json`` records what the model is for."""
    import shutil

    marker = arm_dir / "training.json"
    try:
        had = json.loads(marker.read_text()) if marker.exists() else None
    except (OSError, json.JSONDecodeError):
        had = None
    if had != want:
        for d in ("model", "eval"):
            if (arm_dir / d).exists():
                shutil.rmtree(arm_dir / d)
        write_json(marker, want, indent=2)


def selection_hash(image_ids, restored, dropped) -> str:
    """Hash of what an arm trains on: its frames, the frames whose clean labels an oracle restores,
    and the removed boxes. A resumed experiment retrains an arm when this changed."""
    return steps.fingerprint({"kept": sorted(int(i) for i in image_ids), "relabel": sorted(int(i) for i in restored),
                        "dropped": sorted(int(a) for a in dropped)})


def run_experiment(spec_path: str | Path, out: str | Path | None = None, quick: bool = False,
                   workers: int | None = None, progress: bool = True) -> Path:
    """Run every arm x seed of an experiment spec and write results.csv, summary.md and summary.png."""
    from .summary import COCO_STATS, write_summary

    spec = load_spec(spec_path, quick=quick)
    out = Path(out) if out else Path("experiments") / "results" / (spec.name + ("_quick" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    env = versions()
    if (out / "config.json").is_file():  # resuming: say if the libraries changed since the last run
        changed = differences(json.loads((out / "config.json").read_text()).get("environment"), env)
        if changed:
            _log(f"note: library versions differ from the previous run in this folder ({describe(changed)}); "
                 "arms whose selection changes are retrained")
    write_json(out / "config.json", {"spec": spec.raw, "spec_file": str(spec.path), "quick": quick,
                                     "qualmet_version": __version__, "environment": env}, indent=2)
    if spec.path:
        write_text(out / "spec.toml", spec.path.read_text(encoding="utf-8"))
    _log(f"== experiment {spec.name}{' (quick)' if quick else ''}: {len(spec.arms)} arms x {len(spec.seeds)} seeds, "
         f"budget {spec.raw['budget']}, {spec.raw['detector']['recipe']} x {spec.raw['detector']['iters']} iterations -> {out}")
    noisy_json, test_json, manifest = prepare_data(spec, out)
    run = compute_metrics(spec, out, noisy_json, workers, progress)
    test = load_coco(test_json)
    if manifest is not None:
        from .label_errors import write_label_error_report

        write_label_error_report(run, manifest, out / "label_errors")
    rows = []
    train_s = 0.0  # over every finished arm, including those a resumed run skips
    for seed in spec.seeds:
        for arm in spec.arms:
            r = run_arm(spec, arm, seed, out, run, noisy_json, test, manifest, progress)
            train_s += float(r.get("train_seconds") or 0.0)
            rows.append({"arm": r["arm"], "seed": r["seed"], **{k: r["stats"].get(k) for k in COCO_STATS},
                         "n_frames": r["n_frames"], "n_boxes": r["n_boxes"]})
            results = pd.DataFrame(rows)
            if "random" in set(results.arm):
                write_summary(results, out, f"{spec.name}{' (quick)' if quick else ''}",
                              notes=_notes(spec, quick, time.perf_counter() - t_start, train_s, len(rows)),
                              oracle_arms={a["name"] for a in spec.arms if a.get("oracle")})
    _log(f"\n{(out / 'summary.md').read_text()}\nwrote {out} in {time.perf_counter() - t_start:.0f} s")
    return out


def _notes(spec: Spec, quick: bool, seconds: float, train_s: float, n_runs: int) -> str:
    d, det = spec.raw["data"], spec.raw["detector"]
    noise = spec.raw.get("noise") or {}
    data = (f"synthetic pandas, {d['train']} train / {d['test']} clean test frames at {d['size']} px"
            if d.get("source", "synthetic") == "synthetic" else f"{d['source']}")
    return (f"Data: {data}; label noise rate {noise.get('rate', 0)} on the training split only. Budget "
            f"{spec.raw['budget']} of the training frames for every arm; detector {det['recipe']}, "
            f"{det['iters']} iterations from scratch, seeds {spec.seeds}. Training and scoring the {n_runs} "
            f"arm run(s): {train_s / 60:.1f} min in all; this invocation's wall time: {seconds / 60:.1f} min (a resumed "
            f"run skips finished arms; data, metrics and out-of-fold predictions are not counted in the first "
            f"figure). qualmet {__version__}.")
