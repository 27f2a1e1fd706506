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
from qualmet.errors import QualmetError
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


# --- against pycocotools called directly -----------------------------------------------------------------

def _pycoco(gt: Dataset, preds: list[dict]):
    """COCOeval (bbox) on the same ground truth and predictions, silenced; returns the evaluated object."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = {"images": [{"id": int(i)} for i in gt.images["id"]],
                      "annotations": [{"id": k, "image_id": int(r.image_id), "category_id": int(r.category_id),
                                       "bbox": [r.x, r.y, r.w, r.h], "area": float(r.area), "iscrowd": int(r.iscrowd)}
                                      for k, r in enumerate(gt.annotations.itertuples(), start=1)],
                      "categories": gt.categories[["id", "name"]].to_dict("records")}
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(copy.deepcopy(preds)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _crowd_scene(seed: int) -> tuple[Dataset, list[dict]]:
    """Frames with boxes of two classes and large crowd regions; predictions near boxes, inside crowd
    regions (of either class) and at random, with distinct random scores."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in range(1, 7)]
    anns, preds = [], []
    for i in range(1, 7):
        for _ in range(3):
            x, y, w, h = rng.uniform(0, 120), rng.uniform(0, 120), rng.uniform(8, 60), rng.uniform(8, 60)
            c = int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h], "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):  # near it: a TP, a duplicate, or a poor box
                preds.append({"image_id": i, "category_id": c if rng.random() < 0.8 else 3 - c,
                              "bbox": [x + rng.normal(0, w / 6), y + rng.normal(0, h / 6), w * rng.uniform(0.7, 1.3),
                                       h * rng.uniform(0.7, 1.3)]})
        if i % 3:  # a crowd region, and boxes inside it, partly inside and outside
            x, y, c = rng.uniform(0, 60), rng.uniform(0, 60), int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, 120, 120], "iscrowd": 1})
            for _ in range(5):
                w, h = rng.uniform(5, 40), rng.uniform(5, 40)
                preds.append({"image_id": i, "category_id": c if rng.random() < 0.8 else 3 - c,
                              "bbox": [x + rng.uniform(-20, 120), y + rng.uniform(-20, 120), w, h]})
        for _ in range(2):
            preds.append({"image_id": i, "category_id": int(rng.integers(1, 3)),
                          "bbox": [rng.uniform(0, 180), rng.uniform(0, 180), rng.uniform(5, 30), rng.uniform(5, 30)]})
    for p, s in zip(preds, rng.permutation(len(preds))):
        p["score"] = float(0.05 + 0.9 * s / len(preds))
    gt = Dataset.from_records(images, anns, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    return gt, preds


def test_crowd_regions_ignored_as_cocoeval_does(tmp_path):
    """A detection that matches no box but lies in a crowd region of its class is neither TP nor FP (COCO's
    rule: intersection over the detection's area); crowd regions are never missed."""
    for seed in (0, 1, 2):
        gt, preds = _crowd_scene(seed)
        ev = _pycoco(gt, preds)
        for t in (0, 5):  # IoU 0.5 and 0.75
            thr = float(ev.params.iouThrs[t])
            coco_tp, coco_ignored = {}, {}
            for e in ev.evalImgs:
                if e is None or e["aRng"] != ev.params.areaRng[0]:
                    continue
                for d, m, ig in zip(e["dtIds"], e["dtMatches"][t], e["dtIgnore"][t]):
                    coco_tp[d], coco_ignored[d] = bool(m > 0 and not ig), bool(ig)
            assert sum(coco_ignored.values()) > 0  # the scene does exercise the rule
            coco_fp = sum(not (coco_tp[d] or coco_ignored[d]) for d in coco_tp)
            assert evaluate(gt, preds, score_threshold=0.0, iou_threshold=thr)["counts_at_threshold"]["fp"] == coco_fp
            _, pflags = match(gt, predictions_frame(preds), iou_threshold=thr)
            ours = pflags.set_index("pred_id")
            assert ours["tp"].to_dict() == coco_tp, (seed, thr)
            assert ours["ignored"].to_dict() == coco_ignored, (seed, thr)
        res = evaluate(gt, preds, score_threshold=0.3, out=tmp_path / f"s{seed}")
        pf, cm = res["pred_flags"], res["confusion_matrix"]
        above = pf["score"] >= 0.3
        assert res["counts_at_threshold"]["fp"] == int((~pf["tp"] & ~pf["ignored"] & above).sum())
        assert res["ignored_at_threshold"] == int((pf["ignored"] & above).sum()) > 0
        # every prediction above the threshold is in the matrix once (a column), except the ignored ones;
        # every box once (a row), except the crowd regions, which are never missed
        assert int(cm.drop(columns="background").to_numpy().sum()) == int((above & ~pf["ignored"]).sum())
        assert int(cm.drop(index="background").to_numpy().sum()) == len(res["gt_flags"]) \
            == int((gt.annotations["iscrowd"] == 0).sum())
        assert "ignored" in pd.read_parquet(tmp_path / f"s{seed}" / "pred_flags.parquet")


def test_crowd_hand_case():
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 100}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 50, 50, 50], "iscrowd": 1}]
    gt = Dataset.from_records(images, anns, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    preds = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},   # TP
             {"image_id": 1, "category_id": 1, "bbox": [5, 60, 10, 10], "score": 0.8},  # in the crowd: ignored
             {"image_id": 1, "category_id": 2, "bbox": [5, 60, 10, 10], "score": 0.7},  # other class in it: FP
             {"image_id": 1, "category_id": 1, "bbox": [40, 90, 20, 20], "score": 0.6}]  # 1/4 inside: FP
    res = evaluate(gt, preds)
    assert res["counts_at_threshold"] == {"tp": 1, "fp": 2, "fn": 0}
    np.testing.assert_array_equal(res["confusion_matrix"].to_numpy(), [[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    pf = res["pred_flags"].set_index("pred_id")
    assert pf["ignored"].to_dict() == {1: False, 2: True, 3: False, 4: False}
    assert pf.loc[2, "matched_gt_id"] == 2 and pf.loc[2, "iou"] == pytest.approx(1.0)
    ev = _pycoco(gt, preds)
    assert res["stats"]["AP50"] == pytest.approx(ev.stats[1])


def test_unknown_category_refused(tmp_path, capsys):
    """A prediction of a category the ground truth does not define is refused, not binned as background."""
    gt = _gt()
    bad = _preds() + [{"image_id": 2, "category_id": 99, "bbox": [60, 60, 10, 10], "score": 0.6},
                      {"image_id": 1, "category_id": 7, "bbox": [10, 50, 20, 20], "score": 0.9}]
    with pytest.raises(QualmetError, match=r"^2 predictions with a category id .*first: category_id 99.*this data set"):
        evaluate(gt, bad)
    for fn in (match, confusion_matrix):
        with pytest.raises(QualmetError, match="category_id 99"):
            fn(gt, predictions_frame(bad))
    save_coco(gt, tmp_path / "gt.json")
    (tmp_path / "p.json").write_text(json.dumps(bad))
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "p.json"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "category_id 99" in err and "gt.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_unknown_image_refused():
    """The Python API refuses predictions for images the ground truth does not have, as the CLI does."""
    gt = _gt()
    bad = _preds() + [{"image_id": 77, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9}]
    with pytest.raises(QualmetError, match=r"^1 prediction on images not in the ground truth \(first: image_id 77\)"):
        evaluate(gt, bad)
    for fn in (match, confusion_matrix):
        with pytest.raises(QualmetError, match="image_id 77"):
            fn(gt, predictions_frame(bad))


def test_no_ground_truth_box_is_undefined(tmp_path, capsys):
    """No box to find: COCO says -1 (undefined) for every stat; qualmet says None / null / n/a."""
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 100}]
    cats = [{"id": 1, "name": "cat"}]
    pred = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9}]
    crowd_only = Dataset.from_records(images, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 50, 40, 40],
                                                "iscrowd": 1}], cats)
    for gt in (Dataset.from_records(images, [], cats), crowd_only):
        ref = _pycoco(gt, pred).stats
        assert list(ref) == [-1.0] * 12
        for preds in (pred, []):
            res = evaluate(gt, preds, out=tmp_path / "e")
            assert res["stats"] == {k: None for k in COCO_STATS}
            assert res["per_class_AP"] == {"cat": None}
            assert res["counts_at_threshold"] == {"tp": 0, "fp": len(preds), "fn": 0}
            m = json.loads((tmp_path / "e" / "metrics.json").read_text())
            assert m["stats"]["AP"] is None and m["per_class_AP"]["cat"] is None
            assert "AP           n/a" in (tmp_path / "e" / "metrics.txt").read_text()
    save_coco(Dataset.from_records(images, [], cats), tmp_path / "gt.json")
    (tmp_path / "p.json").write_text(json.dumps(pred))
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "p.json"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "AR100        n/a" in out and "FP 1" in out


def test_no_predictions_size_ranges_as_cocoeval():
    """Without predictions COCOeval cannot run; the stats it would give are derived, and COCO's area ranges
    include their bounds (a 32x32 box is both small and medium)."""
    images = [{"id": 1, "file_name": "1.png", "width": 300, "height": 300}]
    far = [{"image_id": 1, "category_id": 1, "bbox": [290, 290, 3, 3], "score": 0.5}]  # finds nothing
    for wh in ((32, 32), (96, 96), (10, 10), (50, 50), (120, 120)):
        gt = Dataset.from_records(images, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, *wh]}],
                                  [{"id": 1, "name": "a"}])
        ref = {k: (None if v < 0 else float(v)) for k, v in zip(COCO_STATS, _pycoco(gt, far).stats)}
        assert evaluate(gt, []).get("stats") == ref, wh
        assert evaluate(gt, far)["stats"] == ref, wh


def test_clashing_category_names_keep_every_class(tmp_path):
    """Two categories called "x" (and one called "background") each keep their AP, row and column."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2)]
    cats = [{"id": 1, "name": "x"}, {"id": 2, "name": "x"}, {"id": 3, "name": "y"}, {"id": 5, "name": "background"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [10, 10, 30, 30]},
            {"id": 4, "image_id": 2, "category_id": 5, "bbox": [60, 10, 30, 30]}]
    gt = Dataset.from_records(images, anns, cats)
    preds = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
             {"image_id": 1, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.8},
             {"image_id": 2, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.7},
             {"image_id": 2, "category_id": 5, "bbox": [60, 10, 30, 30], "score": 0.6}]
    res = evaluate(gt, preds, out=tmp_path)
    ev = _pycoco(gt, preds)
    ref = {}
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        ref[c] = float(p[p > -1].mean())
    assert res["per_class_AP"] == {"x (id 1)": pytest.approx(ref[1]), "x (id 2)": pytest.approx(ref[2]),
                                   "y": pytest.approx(ref[3]), "background (id 5)": pytest.approx(ref[5])}
    assert ref[1] != ref[2]
    labels = ["x (id 1)", "x (id 2)", "y", "background (id 5)", "background"]
    cm = res["confusion_matrix"]
    assert list(cm.index) == labels and list(cm.columns) == labels
    assert cm.loc["x (id 2)", "background"] == 1 and cm.loc["background", "x (id 2)"] == 1
    assert cm.loc["background (id 5)", "background (id 5)"] == 1
    assert set(json.loads((tmp_path / "metrics.json").read_text())["per_class_AP"]) == set(labels[:4])
    assert "x (id 2)" in (tmp_path / "metrics.txt").read_text()
    ordinary = evaluate(_gt(), _preds())  # names that do not clash keep their keys
    assert list(ordinary["per_class_AP"]) == ["a", "b"]


def test_iou_threshold_must_be_in_0_1(tmp_path, capsys):
    """At IoU 0 a box of another class, or far away, would count as a TP; above 1 nothing could."""
    gt = _gt()
    for bad in (0, 0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(QualmetError, match=r"\(0, 1\]"):
            evaluate(gt, _preds(), iou_threshold=bad)
        with pytest.raises(QualmetError, match=r"\(0, 1\]"):
            match(gt, predictions_frame(_preds()), iou_threshold=bad)
    exact = evaluate(gt, _preds(), iou_threshold=1.0, score_threshold=0.0)
    assert exact["counts_at_threshold"]["tp"] == 2  # the two exact boxes; the 1-pixel shift is not
    save_coco(gt, tmp_path / "gt.json")
    (tmp_path / "p.json").write_text(json.dumps(_preds()))
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "p.json"), "--out", str(tmp_path / "e"),
                  "--iou-threshold", bad])
        assert e.value.code == 2
        assert "--iou-threshold" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
