"""[predictions] file: out-of-fold predictions made elsewhere feed an experiment's model-based metrics
exactly as `qualmet metrics run --predictions` computes them, and a file that does not fit the data
is one line before any arm trains."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from qualmet.errors import QualmetError
from qualmet.experiment import load_spec
from qualmet.experiment.data import prepare_clean, replicate
from qualmet.formats import load_coco
from qualmet.runner import run_metrics

SPEC = """name = "own_preds"
budget = 0.5
seeds = [0]
[data]
source = "synthetic"
train = 16
test = 4
size = 96
seed = 8
[noise]
rate = 0.3
seed = 4
[predictions]
file = "preds.json"
[detector]
recipe = "ssdlite256"
iters = 4
input_size = 96
[[arms]]
name = "random"
strategy = "random"
[[arms]]
name = "filter:confidence"
strategy = "filter"
metric = "confidence"
method = "percentile"
percentile = 25
[[arms]]
name = "pseudo_label"
strategy = "pseudo_label"
"""


def _clean_boxes_as_predictions(train_json, path, category_shift=0):
    """An honest, if perfect, predictor: the clean labels with a score that falls with the box index."""
    ds = load_coco(train_json)
    preds = [{"image_id": int(a.image_id), "category_id": int(a.category_id) + category_shift,
              "bbox": [float(a.x), float(a.y), float(a.w), float(a.h)], "score": round(0.95 - 0.01 * (k % 50), 3)}
             for k, a in enumerate(ds.annotations.itertuples(index=False))]
    path.write_text(json.dumps(preds))


def test_a_spec_takes_predictions_made_elsewhere(tmp_path):
    (tmp_path / "s.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.toml")
    out = tmp_path / "out"
    clean_json, test_json = prepare_clean(spec, out)
    _clean_boxes_as_predictions(clean_json, tmp_path / "preds.json")
    rep = replicate(spec, out, 0, clean_json, load_coco(test_json), workers=1, progress=False)
    assert not (out / "oof" / "folds").exists()  # nothing was trained for them
    assert rep.predictions is not None and len(rep.predictions) == len(load_coco(clean_json).annotations)
    alone = run_metrics(rep.noisy, predictions=tmp_path / "preds.json", metrics=["confidence"], workers=1)
    pd.testing.assert_series_equal(rep.run.objects["confidence"], alone.objects["confidence"])
    assert rep.run.objects["confidence"].notna().any()


def test_predictions_that_do_not_fit_the_data_fail_before_any_arm(tmp_path):
    (tmp_path / "s.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.toml")
    out = tmp_path / "out"
    clean_json, test_json = prepare_clean(spec, out)
    with pytest.raises(QualmetError, match=r"\[predictions\] file .*preds.json does not exist"):
        replicate(spec, out, 0, clean_json, load_coco(test_json), workers=1, progress=False)
    _clean_boxes_as_predictions(clean_json, tmp_path / "preds.json", category_shift=-1)  # 0-based classes
    with pytest.raises(QualmetError, match=r"preds.json.*categor"):
        replicate(spec, out, 0, clean_json, load_coco(test_json), workers=1, progress=False)
    (tmp_path / "bad.toml").write_text(SPEC.replace('file = "preds.json"', "file = 3"))
    with pytest.raises(QualmetError, match=r"\[predictions\] file must be a path"):
        load_spec(tmp_path / "bad.toml")
