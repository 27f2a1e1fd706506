"""Evaluation: COCO stats via pycocotools, flags and confusion matrix on a hand-built case, empty input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.dataset import Dataset
from qualmet.evaluate import COCO_STATS, confusion_matrix, evaluate, match, predictions_frame
from qualmet.formats import save_coco

from .conftest import make_coco


def _gt() -> Dataset:
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2, 3)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20]},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [10, 50, 20, 20]},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30]}]
    return Dataset.from_records(images, anns, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])


def _preds() -> list[dict]:
    return [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},   # TP on gt 1
            {"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 20], "score": 0.8},   # duplicate: FP
            {"image_id": 1, "category_id": 1, "bbox": [10, 50, 20, 20], "score": 0.7},   # on gt 3 (class b): FP
            {"image_id": 3, "category_id": 2, "bbox": [5, 5, 10, 10], "score": 0.6},     # empty frame: FP
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.3}]   # TP on gt 2, low score


def test_ground_truth_as_predictions_scores_one(tmp_path):
    gt = Dataset.from_records(**{k: v for k, v in make_coco(5, 3, size=(200, 150)).items() if k != "info"})
    preds = gt.annotations.assign(score=1.0)
    res = evaluate(gt, preds, out=tmp_path)
    assert list(res["stats"]) == COCO_STATS
    assert res["stats"]["AP"] == pytest.approx(1.0)
    assert res["stats"]["AP50"] == pytest.approx(1.0)
    assert res["stats"]["AR100"] == pytest.approx(1.0)
    assert res["stats"]["APl"] is None  # no large objects: COCO's -1 becomes null
    assert res["per_class_AP"] == {"panda": pytest.approx(1.0), "rock": pytest.approx(1.0)}
    assert res["counts_at_threshold"] == {"tp": 15, "fp": 0, "fn": 0}
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["stats"]["AP"] == pytest.approx(1.0)
    for f in ("pr_curve.png", "confusion_matrix.png", "confusion_matrix.csv", "gt_flags.parquet", "pred_flags.csv",
              "metrics.txt"):
        assert (tmp_path / f).stat().st_size > 0, f


def test_shifted_predictions_lower_ap():
    gt = Dataset.from_records(**{k: v for k, v in make_coco(4, 2, size=(200, 150)).items() if k != "info"})
    shifted = gt.annotations.assign(score=1.0, x=gt.annotations["x"] + 4.0)
    stats = evaluate(gt, shifted)["stats"]
    assert stats["AP"] < 0.9 and stats["AP"] > 0.0


def test_hand_built_flags_and_confusion():
    gt = _gt()
    preds = predictions_frame(_preds())
    gflags, pflags = match(gt, preds)
    g = gflags.set_index("annotation_id")
    assert g.loc[1, "matched_pred_id"] == 1 and g.loc[2, "matched_pred_id"] == 5
    assert g.loc[2, "matched_score"] == pytest.approx(0.3)
    assert g.loc[3, "matched_pred_id"] == -1 and g.loc[4, "matched_pred_id"] == -1
    assert pflags.set_index("pred_id")["tp"].to_dict() == {1: True, 2: False, 3: False, 4: False, 5: True}
    cm = confusion_matrix(gt, preds, score_threshold=0.5)
    assert list(cm.index) == ["a", "b", "background"] and list(cm.columns) == ["a", "b", "background"]
    np.testing.assert_array_equal(cm.to_numpy(), [[1, 0, 2],   # a: 1 found, gt 2 (score 0.3) and gt 4 missed
                                                  [1, 0, 0],   # b: predicted as a
                                                  [1, 1, 0]])  # spurious: the duplicate a, the b on frame 3
    res = evaluate(gt, _preds(), score_threshold=0.5)
    assert res["counts_at_threshold"] == {"tp": 1, "fp": 3, "fn": 3}
    found = res["gt_flags"].set_index("annotation_id")["found"].to_dict()
    assert found == {1: True, 2: False, 3: False, 4: False}
    low = evaluate(gt, _preds(), score_threshold=0.2)
    assert low["counts_at_threshold"] == {"tp": 2, "fp": 3, "fn": 2}
    assert low["confusion_matrix"].loc["a", "a"] == 2


def test_empty_predictions(tmp_path):
    gt = _gt()
    for empty in ([], pd.DataFrame(), None):
        res = evaluate(gt, empty, out=tmp_path)
        assert res["stats"]["AP"] == 0.0 and res["stats"]["AR100"] == 0.0
        assert res["counts_at_threshold"] == {"tp": 0, "fp": 0, "fn": 4}
        assert res["confusion_matrix"]["background"].tolist() == [3, 1, 0]
        # every box here is small (20x20, 30x30): medium and large are n/a, as COCOeval says with predictions
        assert res["stats"]["APs"] == 0.0 and res["stats"]["APm"] is None and res["stats"]["APl"] is None
        assert res["stats"]["ARs"] == 0.0 and res["stats"]["ARm"] is None and res["stats"]["ARl"] is None
    assert (tmp_path / "pr_curve.png").is_file()
    one_bad = evaluate(gt, [{"image_id": 3, "category_id": 1, "bbox": [60, 60, 5, 5], "score": 0.5}])
    assert {k: one_bad["stats"][k] for k in ("APm", "APl", "ARm", "ARl")} == {"APm": None, "APl": None, "ARm": None, "ARl": None}


def test_annotation_id_zero_is_an_ordinary_box():
    """COCOeval marks 'no match' with id 0; a ground-truth box with id 0 must still be found."""
    gt = _gt()
    zero = Dataset.from_records(gt.images.to_dict("records"),
                                [{"id": int(r.id) - 1, "image_id": int(r.image_id), "category_id": int(r.category_id),
                                  "bbox": [r.x, r.y, r.w, r.h]} for r in gt.annotations.itertuples()],
                                gt.categories.to_dict("records"))
    assert 0 in set(zero.annotations["id"])
    perfect = gt.annotations.assign(score=1.0)
    for d in (gt, zero):
        res = evaluate(d, perfect)
        assert res["stats"]["AP"] == pytest.approx(1.0) and res["stats"]["AR100"] == pytest.approx(1.0)
        assert res["per_class_AP"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_cli_evaluate(tmp_path, capsys):
    gt = _gt()
    save_coco(gt, tmp_path / "gt.json")
    (tmp_path / "preds.json").write_text(json.dumps(_preds()))
    (tmp_path / "none.json").write_text("[]")
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "preds.json"), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "TP 1  FP 3  FN 3" in out
    assert "index created" not in out and "Accumulating" not in out  # pycocotools is silenced
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(m["stats"]) == set(COCO_STATS)
    flags = pd.read_parquet(tmp_path / "e" / "pred_flags.parquet")
    assert len(flags) == 5 and flags["tp"].sum() == 2
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "none.json"), "--out", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["stats"]["AP"] == 0.0


def test_evaluate_does_not_import_torch():
    code = "import sys, qualmet.evaluate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
