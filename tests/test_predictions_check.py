"""One prediction check for every way in: metrics run (Python and CLI), evaluate (Python and CLI)."""
from __future__ import annotations

import json

import pytest

import qualmet
from qualmet.cli import main
from qualmet.errors import DatasetError, QualmetError
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco, load_predictions
from qualmet.predictions import check_predictions
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "ds", n=4)


def _preds_from_gt(data, shift: int = 0) -> list[dict]:
    """The ground truth's own boxes as predictions, category ids moved by ``shift`` (-1: a 0-based exporter)."""
    d = json.loads(data.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"] + shift, "bbox": a["bbox"], "score": 0.9}
            for a in d["annotations"]]


ZERO_BASED = (r"preds0\.json: \d+ predictions with a category id not among the categories of .*data\.json "
              r"\(first: prediction \[\d+\], category_id 0\): the predictions number their categories 0\.\.1 "
              r"\(0-based\) while .*data\.json numbers them 1\.\.2 \(1-based\); add 1 to every category_id")


def test_zero_based_categories_are_one_error_in_metrics_run_and_evaluate(data, tmp_path, capsys):
    """The silent wrong result of issue 24: 0-based ids gave confidence 0.0 on every box and exit 0."""
    p0 = tmp_path / "preds0.json"
    p0.write_text(json.dumps(_preds_from_gt(data, -1)))
    with pytest.raises(DatasetError, match=ZERO_BASED):
        run_metrics(data, predictions=p0, metrics=["confidence"], workers=1, progress=False)
    rc = main(["metrics", "run", str(data), "--predictions", str(p0), "--metrics", "confidence",
               "--out", str(tmp_path / "run"), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert err.startswith("qualmet: error: ") and "0-based" in err and "preds0.json" in err
    assert not (tmp_path / "run" / "objects.parquet").exists()

    gt = load_coco(data)
    with pytest.raises(DatasetError, match=ZERO_BASED):
        evaluate(gt, load_predictions(p0, gt))
    rc = main(["evaluate", str(data), str(p0), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "0-based" in err
    assert not (tmp_path / "ev" / "metrics.json").exists()
    with pytest.raises(QualmetError, match=r"category_id 0\): the predictions number their categories 0\.\.1"):
        evaluate(gt, _preds_from_gt(data, -1))  # from memory, the same check (no file to name)

    # the same file with the ids put right scores every box with its own score
    p1 = tmp_path / "preds1.json"
    p1.write_text(json.dumps(_preds_from_gt(data)))
    run = run_metrics(data, predictions=p1, metrics=["confidence"], workers=1, progress=False)
    assert (run.objects["confidence"] == 0.9).all() and len(run.objects) == len(gt.annotations)


def test_check_names_the_file_and_first_bad_prediction(data, tmp_path):
    gt = load_coco(data)
    preds = _preds_from_gt(data)
    preds[2] = dict(preds[2], image_id=99)
    preds[3] = dict(preds[3], image_id=98)
    (tmp_path / "p.json").write_text(json.dumps(preds))
    with pytest.raises(DatasetError, match=r"p\.json: 2 predictions on images not in .*data\.json \(first: "
                                           r"prediction \[2\], image_id 99\); are these predictions for this data set"):
        load_predictions(tmp_path / "p.json", gt)
    preds = _preds_from_gt(data, +5)  # neither 0- nor 1-based: no numbering hint, the plain question
    (tmp_path / "q.json").write_text(json.dumps(preds))
    with pytest.raises(DatasetError, match=r"q\.json: \d+ predictions with a category id .*\(first: prediction \[0\], "
                                           r"category_id \d+\); are these predictions for this data set\?$"):
        load_predictions(tmp_path / "q.json", gt)
    # 1-based predictions for a data set numbered from 0: spelled out the other way round
    zero = gt.categories.assign(id=gt.categories["id"] - 1)
    with pytest.raises(DatasetError, match=r"1\.\.2 \(1-based\) while the data set numbers them 0\.\.1 \(0-based\); "
                                           r"subtract 1"):
        check_predictions(load_predictions(tmp_path / "p.json").iloc[:2], gt.images, zero, file="p.json")


def test_loading_with_the_dataset_or_its_tables_is_the_same_check(data, tmp_path):
    gt = load_coco(data)
    (tmp_path / "p0.json").write_text(json.dumps(_preds_from_gt(data, -1)))
    for call in (lambda: load_predictions(tmp_path / "p0.json", gt),
                 lambda: load_predictions(tmp_path / "p0.json", gt.images, gt.categories)):
        with pytest.raises(DatasetError, match="0-based"):
            call()
    assert len(qualmet.load_predictions(tmp_path / "p0.json", gt.images)) == len(gt.annotations)  # no categories given
