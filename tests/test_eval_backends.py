"""Evaluation backends (pycocotools, faster-coco-eval) and flags taken from COCOeval's own matches."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.dataset import Dataset
from qualmet.errors import QualmetError
from qualmet.evaluate import COCO_STATS, evaluate, match, predictions_frame


def _scene(seed: int = 0, n_images: int = 40, n_cats: int = 3) -> tuple[Dataset, pd.DataFrame]:
    """Ground truth with small, medium and large boxes of ``n_cats`` classes, some crowd regions, and
    detector-like predictions: jittered copies of most boxes (some of the wrong class), duplicates and
    spurious boxes, scores that only loosely follow quality."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"{i}.png", "width": 640, "height": 480} for i in range(1, n_images + 1)]
    anns, preds = [], []
    for i in range(1, n_images + 1):
        for _ in range(rng.integers(0, 12)):
            w, h = rng.choice([12, 40, 150]) * rng.uniform(0.6, 1.6, 2)  # spans COCO's small/medium/large
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            c = int(rng.integers(1, n_cats + 1))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                         "iscrowd": int(rng.random() < 0.03)})
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, found twice
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cc = c if rng.random() < 0.85 else int(rng.integers(1, n_cats + 1))
                preds.append({"image_id": i, "category_id": cc, "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                              "score": float(np.clip(0.9 - abs(j).sum() / (w + h) + rng.normal(0, 0.2), 0.01, 1))})
        for _ in range(rng.integers(0, 5)):  # spurious
            w, h = rng.uniform(8, 200, 2)
            preds.append({"image_id": i, "category_id": int(rng.integers(1, n_cats + 1)),
                          "bbox": [rng.uniform(0, 600), rng.uniform(0, 440), w, h], "score": float(rng.uniform(0, 0.7))})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)]
    return Dataset.from_records(images, anns, cats), predictions_frame(preds)


def _pycoco_eval(gt: Dataset, preds: pd.DataFrame):
    """pycocotools on its own, fed the same boxes, as a reference."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = {"images": [{"id": int(i)} for i in gt.images["id"]],
                      "annotations": [{"id": k, "image_id": int(r.image_id), "category_id": int(r.category_id),
                                       "bbox": [r.x, r.y, r.w, r.h], "area": float(r.w * r.h),
                                       "iscrowd": int(r.iscrowd)}
                                      for k, r in enumerate(gt.annotations.itertuples(), start=1)],
                      "categories": gt.categories[["id", "name"]].to_dict("records")}
        cg.createIndex()
        cd = cg.loadRes([{"image_id": int(r.image_id), "category_id": int(r.category_id),
                          "bbox": [r.x, r.y, r.w, r.h], "score": r.score} for r in preds.itertuples()])
        ev = COCOeval(cg, cd, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_gives_pycocotools_stats_exactly(seed):
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is optional: pip install 'qualmet[fast-eval]'")
    gt, preds = _scene(seed)
    ref = evaluate(gt, preds)
    fast = evaluate(gt, preds, backend="faster-coco-eval")
    assert all(ref["stats"][k] is not None for k in COCO_STATS)  # every size present: all 12 compared as numbers
    assert fast["stats"] == ref["stats"]  # exactly: bit-for-bit equal floats
    assert fast["per_class_AP"] == ref["per_class_AP"]
    assert list(ref["stats"].values()) == [float(v) for v in _pycoco_eval(gt, preds).stats]
    for k in ("gt_flags", "pred_flags"):
        pd.testing.assert_frame_equal(fast[k], ref[k])
    assert fast["backend"] == "faster-coco-eval" and ref["backend"] == "pycocotools"


def test_unknown_or_missing_backend_is_one_error(tmp_path, capsys, monkeypatch):
    gt, preds = _scene(0, n_images=3)
    with pytest.raises(QualmetError, match="unknown evaluation backend 'detectron'"):
        evaluate(gt, preds, backend="detectron")
    import sys

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    with pytest.raises(QualmetError, match=r"pip install 'qualmet\[fast-eval\]'"):
        evaluate(gt, preds, backend="faster-coco-eval")
    from qualmet.formats import save_coco

    save_coco(gt, tmp_path / "gt.json")
    (tmp_path / "p.json").write_text("[]")
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "p.json"), "--out", str(tmp_path / "e"),
                 "--backend", "faster-coco-eval"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "faster-coco-eval" in err


def test_flags_are_cocoevals_own_matches():
    """Every prediction's TP/ignored flag and every box's match equal COCOeval's evalImgs at IoU 0.5."""
    gt, preds = _scene(3)
    gflags, pflags = match(gt, preds)
    ev = _pycoco_eval(gt, preds)
    tp, ign, found = {}, {}, {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != [0, 1e10]:
            continue
        for d, m, ig in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            tp[d], ign[d] = bool(m) and not ig, bool(ig)
        for g, m, ig in zip(e["gtIds"], e["gtMatches"][0], e["gtIgnore"]):
            if not ig:
                found[int(gt.annotations["id"].iat[g - 1])] = int(m)
    pf = pflags.set_index("pred_id")
    assert pf["tp"].to_dict() == tp and pf["ignored"].to_dict() == ign and pf["ignored"].any()
    assert gflags.set_index("annotation_id")["matched_pred_id"].clip(lower=0).to_dict() == found


def test_flags_and_ap_agree_above_100_predictions_per_frame():
    """COCO counts the 100 best-scoring predictions of a class on a frame; a box found only by the 101st
    is missed for AP, and so it is for the flags (a plain greedy matcher called it found)."""
    images = [{"id": 1, "file_name": "1.png", "width": 1000, "height": 1000}]
    gt = Dataset.from_records(images, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [500, 500, 40, 40]}],
                              [{"id": 1, "name": "a"}])
    junk = [{"image_id": 1, "category_id": 1, "bbox": [4.0 * k, 0, 3, 3], "score": 0.9} for k in range(100)]
    hit = {"image_id": 1, "category_id": 1, "bbox": [500, 500, 40, 40], "score": 0.5}
    res = evaluate(gt, junk + [hit])
    ref = _pycoco_eval(gt, predictions_frame(junk + [hit]))
    assert res["stats"]["AR100"] == ref.stats[8] == 0.0
    assert res["gt_flags"]["matched_pred_id"].tolist() == [-1] and res["counts_at_threshold"]["fn"] == 1
    last = res["pred_flags"].set_index("pred_id").loc[101]
    assert last["capped"] and last["ignored"] and not last["tp"]
    assert res["counts_at_threshold"]["fp"] == 100 and res["pred_flags"]["capped"].sum() == 1
    # with one junk box fewer the true box is among the 100: found, and COCO agrees
    res = evaluate(gt, junk[1:] + [hit])
    assert res["stats"]["AR100"] == pytest.approx(1.0) and res["gt_flags"]["matched_pred_id"].tolist() == [100]
    assert not res["pred_flags"]["capped"].any()
