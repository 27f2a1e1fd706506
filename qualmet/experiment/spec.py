"""Experiment specs: the TOML file read, merged with defaults (and, with --quick, its [quick] table)
and checked before any data is made or any model trained."""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contrasts import Contrast, parse_contrasts
from ..errors import QualmetError
from ..select import ANCHORS, USES_PREDICTIONS, Strategy, check_budget
from .learned import LEARNED

DEFAULTS: dict[str, Any] = {
    "budget": 0.25,
    "seeds": [0, 1, 2],
    "data": {"source": "synthetic", "train": 800, "test": 200, "size": 256, "seed": 0},
    "noise": {"rate": 0.3, "seed": 0},
    "detector": {"recipe": "ssdlite256", "iters": 600},
    "predictions": {"folds": 3},
}

# the keys a spec may use, per table; anything else is a typo that would otherwise be ignored
SPEC_KEYS = {
    "": {"name", "description", "budget", "seeds", "data", "noise", "detector", "predictions", "arms", "metrics",
         "contrasts"},
    "data": {"source", "train", "test", "size", "seed", "format", "test_source", "test_fraction", "images", "train_list",
             "test_images", "also_test"},
    "noise": {"rate", "seed", "types", "vary"},
    "predictions": {"folds", "iters", "file"},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def slug(name: str) -> str:
    """An arm's folder name under arms/."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


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

    @property
    def noise(self) -> dict[str, Any]:
        return self.raw.get("noise") or {}

    @property
    def has_noise(self) -> bool:
        return float(self.noise.get("rate", 0)) > 0

    @property
    def vary_noise(self) -> bool:
        """True when each seed draws its own noise (and out-of-fold predictions and metrics)."""
        return self.has_noise and bool(self.noise.get("vary", False))

    def noise_seed(self, seed: int) -> int:
        """The noise draw a seed trains on: [noise] seed, plus the seed itself when the noise varies."""
        return int(self.noise.get("seed", 0)) + (seed if self.vary_noise else 0)

    @property
    def contrasts(self) -> list[Contrast]:
        return parse_contrasts(self.raw.get("contrasts"), [a["name"] for a in self.arms], str(self.path))

    def anchor_arms(self) -> set[str]:
        """Arms that are references, not metric strategies: the anchors, oracle relabelling, and random
        samples other than the baseline (e.g. ``all``, a random arm with a budget of its own)."""
        return {a["name"] for a in self.arms if a.get("strategy") in ANCHORS or a.get("oracle")
                or (a.get("strategy", "random") == "random" and a["name"] != "random")}

    def budget(self, arm: dict[str, Any]) -> float | int:
        """The arm's budget: its own ``budget`` when it has one, else the spec's."""
        return arm.get("budget", self.raw["budget"])

    @property
    def also_test(self) -> dict[str, str]:
        """``[data.also_test]``: more label sets (name -> path) for the test frames, each scored beside the test."""
        return dict(self.raw["data"].get("also_test") or {})

    def arms_need_predictions(self) -> bool:
        """True when an arm reads the out-of-fold predictions (ignore_predicted, pseudo_label, review)."""
        return any(a.get("strategy") in USES_PREDICTIONS for a in self.arms)

    def metrics_needed(self) -> list[str]:
        """Metrics the arms rank by (a review arm without ``metrics``: the review rules' metrics), plus any
        listed under ``metrics``."""
        from ..review import RULE_METRICS

        names = list(self.raw.get("metrics", []))
        for a in self.arms:
            names += list(RULE_METRICS) if a.get("strategy") == "review" and not a.get("metrics") else []
            names += [a["metric"]] if a.get("metric") and a["metric"] != LEARNED else []
            names += list(a.get("metrics", [])) + list(a.get("learn_from", []))
        return list(dict.fromkeys(names))


def _check_learned(a: dict[str, Any], p: Path) -> None:
    """A learned arm ranks by metric "learned", fitted on ``verified`` frames over ``learn_from`` metrics."""
    learned = "verified" in a or "learn_from" in a or a.get("metric") == LEARNED
    if not learned:
        return
    v = a.get("verified")
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        raise QualmetError(f"{p}: arm {a['name']!r}: a learned arm needs 'verified', a number of frames >= 1, got {v!r}")
    if not isinstance(a.get("learn_from"), list) or len(a["learn_from"]) < 1:
        raise QualmetError(f"{p}: arm {a['name']!r}: a learned arm needs 'learn_from', a list of object metrics")
    if a.get("metric") != LEARNED:
        raise QualmetError(f"{p}: arm {a['name']!r}: a learned arm ranks by metric = \"{LEARNED}\"")


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QualmetError(f"{p}: experiment spec not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise QualmetError(f"{p}: malformed TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise QualmetError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise QualmetError(f"{p}: cannot read the experiment spec ({exc.strerror or exc})") from None


def load_spec(path: str | Path, quick: bool = False) -> Spec:
    """Read an experiment TOML; ``quick`` applies its ``[quick]`` overrides (``arms`` there lists arm names,
    ``contrasts`` there replaces the declared contrasts)."""
    p = Path(path)
    raw = _read_toml(p)
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
            if "contrasts" in spec and "contrasts" not in quick_over:  # those of the arms kept
                spec["contrasts"] = [c for c in spec["contrasts"]
                                     if all(x in keep for x in ([c, "random"] if isinstance(c, str) else c))] or None
                if spec["contrasts"] is None:
                    del spec["contrasts"]
    _check_arms(spec, p)
    _check_seeds(spec["seeds"], p)
    out = Spec(name=str(spec.get("name", p.stem)), raw=spec, path=p)
    _check_spec(out)
    return out


def _check_arms(spec: dict, p: Path) -> None:
    if not spec.get("arms"):
        raise QualmetError(f"{p}: no [[arms]] defined")
    seen: set[str] = set()
    noisy = float((spec.get("noise") or {}).get("rate", 0)) > 0
    for n, a in enumerate(spec["arms"]):
        if "name" not in a:
            raise QualmetError(f"{p}: arms[{n}] needs a 'name'")
        if a["name"] in seen:
            raise QualmetError(f"{p}: duplicate arm name {a['name']!r}")
        clash = next((b for b in seen if slug(b) == slug(a["name"])), None)
        if clash is not None:  # both would train into arms/<folder>/
            raise QualmetError(f"{p}: arm names {clash!r} and {a['name']!r} map to the same folder "
                               f"arms/{slug(a['name'])}; rename one")
        seen.add(a["name"])
        try:
            Strategy.from_dict(a)  # validate early: a typo fails before any training
        except QualmetError as exc:
            raise QualmetError(f"{p}: arm {a['name']!r}: {exc}") from None
        if "budget" in a:
            try:
                check_budget(a["budget"])
            except QualmetError as exc:
                raise QualmetError(f"{p}: arm {a['name']!r}: {exc}") from None
        if (a.get("strategy") in ANCHORS or a.get("oracle") or "verified" in a) and not noisy:
            raise QualmetError(f"{p}: arm {a['name']!r}: an anchor, oracle or learned arm needs injected noise "
                               "([noise] rate > 0): it reads the noise manifest")
        _check_learned(a, p)
    if "random" not in seen:
        raise QualmetError(f"{p}: an experiment needs an arm named 'random' (the baseline)")


def _check_seeds(seeds: Any, p: Path) -> None:
    if not isinstance(seeds, list) or len(seeds) < 1:
        raise QualmetError(f"{p}: 'seeds' must list at least one seed")
    bad = [v for v in seeds if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise QualmetError(f"{p}: 'seeds' must be whole numbers from 0 up, got {bad[0]!r}")
    dup = sorted({v for v in seeds if seeds.count(v) > 1})
    if dup:  # each seed is one paired comparison with random: a repeat would train twice and pair nothing
        raise QualmetError(f"{p}: 'seeds' lists {', '.join(map(str, dup))} more than once")


def _check_spec(s: Spec) -> None:
    """Unknown keys, recipe fields, metric names, contrasts and the budget fail here, before any data
    is made or any model trained."""
    spec, p = s.raw, s.path
    for table, allowed in SPEC_KEYS.items():
        got = spec if table == "" else spec.get(table) or {}
        if not isinstance(got, dict):
            raise QualmetError(f"{p}: [{table}] must be a table")
        unknown = sorted(set(got) - allowed)
        if unknown:
            where = f"[{table}]" if table else "the top level"
            raise QualmetError(f"{p}: unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}")
    _check_data(s)
    pf = (spec.get("predictions") or {}).get("file")
    if pf is not None and not (isinstance(pf, str) and pf):
        raise QualmetError(f"{p}: [predictions] file must be a path (a string), got {pf!r}")
    if not isinstance(s.noise.get("vary", False), bool):
        raise QualmetError(f"{p}: [noise] vary must be true or false, got {s.noise['vary']!r}")
    from ..detector.recipe import get_recipe

    det = dict(spec["detector"])
    if "command" in det:  # the user's own trainer: the recipe fields still drive the out-of-fold folds
        from .external import check_command

        check_command(det.pop("command"), str(p))
    try:
        get_recipe(str(det.pop("recipe", "ssdlite256")), **{k: v for k, v in det.items() if k != "val_fraction"})
    except (QualmetError, TypeError) as exc:
        raise QualmetError(f"{p}: [detector]: {exc}") from None
    try:
        check_budget(spec["budget"])
    except QualmetError as exc:
        raise QualmetError(f"{p}: {exc}") from None
    s.contrasts  # noqa: B018 -- parsed here so a bad contrast fails before any work
    known_metrics(s)


def _check_data(s: Spec) -> None:
    """The real-data keys: paths are strings, ``also_test`` a table of named paths that needs a test split."""
    d, p = s.raw["data"], s.path
    real = d.get("source", "synthetic") != "synthetic"
    for k in ("images", "train_list", "test_images", "test_source"):
        if k in d and not isinstance(d[k], str):
            raise QualmetError(f"{p}: [data] {k} must be a path (a string), got {d[k]!r}")
        if k in d and not real:
            raise QualmetError(f"{p}: [data] {k} is for a real data set ([data] source a path), not synthetic data")
    also = d.get("also_test")
    if also is None:
        return
    if not isinstance(also, dict) or not also:
        raise QualmetError(f"{p}: [data.also_test] must be a table of name = path")
    if not real:
        raise QualmetError(f"{p}: [data.also_test] is for a real data set ([data] source a path)")
    for name, path in also.items():
        if not isinstance(path, str):
            raise QualmetError(f"{p}: [data.also_test] {name} must be a path (a string), got {path!r}")
        if slug(name) != name or name in ("", "main"):
            raise QualmetError(f"{p}: [data.also_test] name {name!r}: use letters, digits, '-' and '_' (it names "
                               "results_<name>.csv), and not 'main'")


def known_metrics(spec: Spec):
    """The registry, after checking it has every metric ``spec`` needs (an error naming the others)."""
    from ..discovery import load_registry

    reg = load_registry()
    unknown = [m for m in spec.metrics_needed() if m not in reg]
    if unknown:
        raise QualmetError(f"{spec.path}: unknown metric(s) {reg.hint(unknown)}; see `qualmet metrics list`")
    return reg
