"""The experiment specs shipped in experiments/ load, name only registered metrics and valid
strategies, and (raccoon) turn into the author's 160/40 split with the promised label noise.
No training happens here: prepare_data only reads CSVs, injects noise and writes COCO files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qualmet.experiment import load_spec, prepare_data
from qualmet.formats import load_coco
from qualmet.imageio import read_image
from qualmet.manifest import load_manifest
from qualmet.noise import applicable_types
from qualmet.discovery import load_registry
from qualmet.select import STRATEGIES, Strategy

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SPECS = ["pandas_filtering.toml", "raccoon_filtering.toml", "headroom_pilot.toml", "headroom_pilot_i800_n03.toml",
         "headroom_pilot_i400_n05.toml", "headroom_pilot_i800_n05.toml"]


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("name", SPECS)
def test_spec_arms_use_registered_metrics_and_valid_strategies(name, quick):
    spec = load_spec(EXPERIMENTS / name, quick=quick)
    reg = load_registry()
    assert "random" in [a["name"] for a in spec.arms]
    assert len(spec.seeds) >= (1 if quick else 3)
    for arm in spec.arms:
        strategy = Strategy.from_dict(arm)
        assert strategy.kind in STRATEGIES, arm["name"]
        # a learned arm ranks by the combiner it fits ("learned") over its learn_from metrics
        named = ([arm["metric"]] if arm.get("metric") and arm["metric"] != "learned" else []) + list(
            arm.get("metrics", [])) + list(arm.get("learn_from", []))
        assert (arm.get("metric") == "learned") == ("verified" in arm), arm["name"]
        for m in named:
            assert m in reg, f"{name} arm {arm['name']!r}: metric {m!r} is not in the registry"
        if arm.get("oracle"):
            assert spec.raw.get("noise", {}).get("rate", 0) > 0, "an oracle arm needs injected noise"
    assert all(m in reg for m in spec.metrics_needed())


@pytest.fixture(scope="module")
def raccoon(tmp_path_factory, raccoon_dir):
    spec = load_spec(EXPERIMENTS / "raccoon_filtering.toml")
    out = tmp_path_factory.mktemp("raccoon_spec")
    noisy, test, manifest = prepare_data(spec, out)
    return spec, out, noisy, test, manifest


def test_raccoon_spec_uses_the_authors_160_40_split(raccoon, raccoon_dir):
    spec, out, noisy_json, test_json, _ = raccoon
    clean, noisy, test = load_coco(out / "data" / "train.json"), load_coco(noisy_json), load_coco(test_json)
    assert len(clean.images) == len(noisy.images) == 160
    assert len(test.images) == 40
    csv = raccoon_dir / "data"
    assert set(test.images.file_name) == set(pd.read_csv(csv / "test_labels.csv").filename)
    assert set(clean.images.file_name) == set(pd.read_csv(csv / "train_labels.csv").filename)
    assert not set(clean.images.file_name) & set(test.images.file_name)
    # the test split stays clean: exactly the author's boxes
    assert len(test.annotations) == len(pd.read_csv(csv / "test_labels.csv"))


def test_raccoon_noise_matches_the_rate(raccoon):
    spec, out, noisy_json, _, manifest_path = raccoon
    assert manifest_path is not None and manifest_path.exists()
    clean = load_coco(out / "data" / "train.json")
    man = load_manifest(manifest_path)
    rate = float(spec.raw["noise"]["rate"])
    assert len(man) == round(rate * len(clean.annotations))  # 52 of 173 boxes
    assert set(man["type"]) <= set(applicable_types(clean))  # single class: no wrong_class
    assert "wrong_class" not in set(man["type"])
    assert set(man["image_id"].astype(int)) <= set(clean.images["id"].astype(int))
    noisy = load_coco(noisy_json)
    added = man["type"].isin(["spurious", "duplicate"]).sum()
    deleted = (man["type"] == "missing").sum()
    assert len(noisy.annotations) == len(clean.annotations) + added - deleted


def test_raccoon_images_resolve(raccoon):
    _, _, noisy_json, test_json, _ = raccoon
    for path in (noisy_json, test_json):
        ds = load_coco(path)
        paths = [Path(ds.image_path(f)) for f in ds.images.file_name]
        missing = [str(p) for p in paths if not p.is_file()]
        assert not missing, f"{path.name}: images not found: {missing[:3]}"
        for row in ds.images.head(3).itertuples():  # decode a few: right files, right sizes
            img = read_image(ds.image_path(row.file_name))
            assert img.shape[:2] == (row.height, row.width), row.file_name
