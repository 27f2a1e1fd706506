"""The review queue on a synthetic data set with planted faults: each fault is listed with the right
kind near the top, with the reason a reader needs, and the files round-trip through pycocotools."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.combine import LearnedCombiner, class_percentiles, rank_mean
from qualmet.formats import load_coco, save_coco
from qualmet.metric_run import MetricRun
from qualmet.review import build_review
from qualmet.review_files import write_review
from qualmet.runner import run_metrics

TOP = 12  # each planted fault must be among the first TOP issues


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 synthetic frames; predictions = the clean boxes (score 0.9). Then: box A made loose (3x its
    area, same centre), box B deleted (the prediction stays), box C duplicated (shifted 2 px), a
    spurious box on frame 8, a box of zero width on frame 15, and frame 12's pixels replaced by
    uniform grey."""
    from qualmet.synth import generate

    root = tmp_path_factory.mktemp("review")
    generate(root, n_train=40, n_test=0, seed=3, size=192)
    ds = load_coco(root / "train.json")
    clean = ds.annotations.copy()
    preds = pd.DataFrame({"image_id": clean["image_id"], "category_id": clean["category_id"], "x": clean["x"],
                          "y": clean["y"], "w": clean["w"], "h": clean["h"], "score": 0.9})
    anns = clean.copy()
    by_frame = anns.groupby("image_id")["id"].apply(list)
    a, b, c = by_frame.iloc[2][0], by_frame.iloc[5][0], by_frame.iloc[9][0]
    ra = anns.index[anns["id"] == a][0]
    x, y, w, h = anns.loc[ra, ["x", "y", "w", "h"]]
    W, H = ds.images.set_index("id").loc[anns.loc[ra, "image_id"], ["width", "height"]]
    nw, nh = min(w * 1.73, W), min(h * 1.73, H)
    anns.loc[ra, ["x", "y", "w", "h"]] = [max(0, x + w / 2 - nw / 2), max(0, y + h / 2 - nh / 2), nw, nh]
    deleted = anns[anns["id"] == b].iloc[0]
    anns = anns[anns["id"] != b]
    dup = anns[anns["id"] == c].iloc[0].copy()
    dup["id"], dup["x"] = anns["id"].max() + 1, dup["x"] + 2
    frame8 = int(ds.images["id"].iloc[8])
    spur = dup.copy()
    spur["id"], spur["image_id"], spur["x"], spur["y"], spur["w"], spur["h"] = dup["id"] + 1, frame8, 2.0, 2.0, 30.0, 24.0
    empty = spur.copy()
    empty["id"], empty["image_id"], empty["w"] = spur["id"] + 1, int(ds.images["id"].iloc[15]), 0.0
    anns = pd.concat([anns, dup.to_frame().T, spur.to_frame().T, empty.to_frame().T], ignore_index=True)
    anns = anns.astype(clean.dtypes.to_dict())
    ds.annotations = anns.reset_index(drop=True)
    grey = ds.images.iloc[12]
    cv2.imwrite(str(ds.image_path(grey["file_name"])), np.full((int(grey["height"]), int(grey["width"]), 3), 128, np.uint8))
    save_coco(ds, root / "faulty.json")
    pred_path = root / "preds.json"
    pred_path.write_text(json.dumps([{"image_id": int(r.image_id), "category_id": int(r.category_id),
                                      "bbox": [r.x, r.y, r.w, r.h], "score": r.score} for r in preds.itertuples()]))
    run = run_metrics(root / "faulty.json", predictions=pred_path, out=root / "run", workers=1, progress=False)
    return {"root": root, "ds": load_coco(root / "faulty.json"), "run": run, "preds": preds, "pred_path": pred_path,
            "loose": a, "deleted": deleted, "dup": int(dup["id"]), "dup_of": c, "spurious": int(spur["id"]),
            "grey": int(grey["id"]), "loose_was": (x, y, w, h), "empty": int(empty["id"])}


def _issue(review, **where) -> pd.DataFrame:
    q = review.issues
    for k, v in where.items():
        q = q[q[k] == v]
    return q


def test_each_planted_fault_is_near_the_top_with_its_kind(planted):
    review = build_review(planted["ds"], planted["run"], planted["preds"])
    print(review.issues.head(TOP)[["rank", "kind", "score", "annotation_id", "image_id"]].to_string())
    loose = _issue(review, annotation_id=planted["loose"])
    assert loose["kind"].tolist() == ["loose/shifted box"] and int(loose["rank"].iloc[0]) <= TOP
    assert np.allclose(loose[["sx", "sy", "sw", "sh"]].to_numpy(float)[0], planted["loose_was"])  # the true box
    dup = _issue(review, annotation_id=planted["dup"])
    assert dup["kind"].tolist() == ["duplicate"] and int(dup["rank"].iloc[0]) <= TOP
    assert f"with annotation {planted['dup_of']} of the same class" in dup["reasons"].iloc[0]
    spur = _issue(review, annotation_id=planted["spurious"])
    assert spur["kind"].tolist() == ["spurious box"] and int(spur["rank"].iloc[0]) <= TOP
    assert "confidence 0, " in spur["reasons"].iloc[0] and "percentile of its class" in spur["reasons"].iloc[0]
    d = planted["deleted"]
    miss = _issue(review, kind="missing box", image_id=int(d["image_id"]))
    assert len(miss) == 1 and int(miss["rank"].iloc[0]) <= TOP
    assert np.allclose(miss[["sx", "sy", "sw", "sh"]].to_numpy(float)[0], d[["x", "y", "w", "h"]].to_numpy(float))
    empty = _issue(review, annotation_id=planted["empty"])
    assert empty["kind"].tolist() == ["empty box"] and int(empty["rank"].iloc[0]) <= TOP
    bad = _issue(review, kind="bad image", image_id=planted["grey"])
    assert len(bad) == 1 and "beyond its 3x IQR fence" in bad["reasons"].iloc[0]
    assert review.frames["image_id"].iloc[:8].isin([planted["grey"], int(d["image_id"])]).sum() >= 1


def test_without_predictions_the_queue_still_works_and_says_what_it_lacks(planted):
    ds = planted["ds"]
    label_only = MetricRun(planted["run"].objects.drop(columns=["confidence"]),
                           planted["run"].frames.drop(columns=["missed_by_labels"]), planted["run"].info)
    review = build_review(ds, label_only)
    assert not review.issues["kind"].isin(["missing box", "wrong class"]).any()
    assert _issue(review, annotation_id=planted["dup"])["kind"].tolist() == ["duplicate"]
    assert any("need out-of-fold predictions" in n and "qualmet crossval" in n for n in review.notes)


def test_the_files_round_trip_through_pycocotools(planted, tmp_path):
    from pycocotools.coco import COCO

    review = build_review(planted["ds"], planted["run"], planted["preds"])
    paths = write_review(review, planted["ds"], tmp_path / "q")
    coco = COCO(str(paths["review.json"]))
    ann = coco.anns[planted["dup"]]
    assert ann["qualmet_issue"] == "duplicate" and isinstance(ann["qualmet_reasons"], list)
    assert ann["qualmet_score"] == pytest.approx(review.boxes.set_index("annotation_id").loc[planted["dup"], "score"])
    sugg = coco.loadRes(str(paths["suggestions.json"]))  # pycocotools accepts them as detections
    kinds = {a["qualmet_issue"] for a in sugg.anns.values()}
    assert "missing box" in kinds
    csv = pd.read_csv(paths["review.csv"])
    assert csv["rank"].tolist() == list(range(1, len(csv) + 1)) and (csv["score"].diff().dropna() <= 1e-9).all()


def test_cli_review_and_its_one_line_errors(planted, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["review", str(planted["root"] / "faulty.json"), "--run", str(planted["root"] / "run"),
               "--predictions", str(planted["pred_path"]), "--out", str(out)])
    assert rc == 0 and (out / "review.csv").is_file() and "duplicate" in capsys.readouterr().out
    bad = tmp_path / "verified.csv"
    bad.write_text("annotation_id,verdict\n1,maybe\n")
    assert main(["review", str(planted["root"] / "faulty.json"), "--run", str(planted["root"] / "run"),
                 "--verified", str(bad), "--out", str(out)]) == 2
    assert "row 2: verdict 'maybe'; write correct or wrong" in capsys.readouterr().err


def test_class_percentiles_rank_within_each_class():
    objects = pd.DataFrame({"annotation_id": range(6), "image_id": 1, "category_id": [1, 1, 1, 2, 2, 2],
                            "m": [0.1, 0.2, 0.3, 10.0, 20.0, np.nan]})
    run = MetricRun.from_tables(objects, pd.DataFrame({"image_id": [1]}), {"m": "low"})
    p = class_percentiles(run)["m"]
    assert p.tolist()[:5] == pytest.approx([1.0, 2 / 3, 1 / 3, 1.0, 0.5]) and np.isnan(p.iloc[5])
    assert rank_mean(run).iloc[:5].tolist() == pytest.approx(p.iloc[:5].tolist())


def test_the_learned_combiner_recovers_a_planted_signal():
    """Wrong boxes are low on 'signal' and random on 'noise': fitted on 60 verified boxes, the model
    weighs signal's suspicion and ranks the other wrong boxes first (AUROC > 0.9)."""
    from qualmet.stats import auroc

    rng = np.random.default_rng(0)
    n = 400
    wrong = rng.random(n) < 0.2
    objects = pd.DataFrame({"annotation_id": np.arange(n), "image_id": np.arange(n) // 4, "category_id": 1,
                            "signal": np.where(wrong, rng.normal(0, 1, n), rng.normal(3, 1, n)),
                            "noise": rng.normal(0, 1, n)})
    objects.loc[5, "signal"] = np.nan
    run = MetricRun.from_tables(objects, pd.DataFrame({"image_id": np.arange(n // 4)}), {"signal": "low", "noise": "high"})
    verified = pd.Series(wrong[:60], index=np.arange(60))
    model = LearnedCombiner.fit(run, verified)
    w = dict(zip(model.metrics, model.weights[: len(model.metrics)]))
    assert w["signal"] > 1.0 and abs(w["noise"]) < w["signal"] / 3
    s = model.score(run).to_numpy()
    assert auroc(s[60:], wrong[60:]) > 0.9 and np.isfinite(s[5])


def test_the_report_shows_the_queue_with_a_crop_per_issue(planted, tmp_path):
    from qualmet.report import build_report

    review = build_review(planted["ds"], planted["run"], planted["preds"])
    write_review(review, planted["ds"], tmp_path / "q")
    index = build_report(tmp_path / "report", run=planted["root"] / "run", review=tmp_path / "q", progress=False)
    html = index.read_text()
    assert 'id="review"' in html and 'data-explorer="data-review"' in html
    blob = json.loads(html.split('<script type="application/json" id="data-review">')[1].split("</script>")[0])
    assert [r[2] for r in blob["rows"]] == review.issues["rank"].tolist()
    kinds = {r[3] for r in blob["rows"]}
    assert {"duplicate", "missing box", "bad image"} <= kinds
    crops = [r[0] for r in blob["rows"]]
    assert all(c and (index.parent / c).is_file() for c in crops)


def test_the_queue_scored_against_a_manifest_of_the_planted_faults(planted):
    from qualmet.label_errors import review_against_manifest

    d = planted["deleted"]
    man = pd.DataFrame([
        {"annotation_id": planted["loose"], "image_id": 3, "type": "loose"},
        {"annotation_id": int(d["id"]), "image_id": int(d["image_id"]), "type": "missing", "orig_x": d["x"],
         "orig_y": d["y"], "orig_w": d["w"], "orig_h": d["h"]},
        {"annotation_id": planted["dup"], "image_id": 10, "type": "duplicate"},
        {"annotation_id": planted["spurious"], "image_id": 9, "type": "spurious"}])
    review = build_review(planted["ds"], planted["run"], planted["preds"])
    prec, rec = review_against_manifest(review.issues, man)
    rec = rec.set_index("type")
    assert rec["recall"].tolist() == [1.0] * 4 and rec["recall_right_kind"].tolist() == [1.0] * 4
    p = prec.set_index("kind")
    assert p.loc["duplicate", "precision@10"] == 1.0 and p.loc["missing box", "right_kind@10"] == 1.0
    n_loose = int((review.issues["kind"] == "loose/shifted box").sum())
    assert p.loc["loose/shifted box", "precision@10"] == pytest.approx(1 / min(10, n_loose))


def test_select_by_the_review_queue_leaves_out_the_planted_faults(planted, tmp_path):
    """`qualmet select --strategy review`: half the frames, those with the fewest review issues; every
    frame holding a planted fault (loose, deleted, duplicated, spurious or empty box) has an issue."""
    ds = planted["ds"]
    boxes = ds.annotations.set_index("id")["image_id"]
    faulty = {int(planted["deleted"]["image_id"])} | {int(boxes[a]) for a in (planted["loose"], planted["dup"],
                                                                                planted["spurious"], planted["empty"])}
    out = tmp_path / "sel"
    assert main(["select", str(planted["root"] / "faulty.json"), "--run", str(planted["root"] / "run"),
                 "--strategy", "review", "--predictions", str(planted["pred_path"]), "--budget", "20",
                 "--out", str(out)]) == 0
    chosen = set(load_coco(out / "subset.json").images["id"].astype(int))
    assert len(chosen) == 20 and not chosen & faulty
    frames = build_review(ds, planted["run"], planted["preds"]).frames.set_index("image_id")
    assert frames.loc[sorted(chosen), "issues"].max() <= frames.drop(index=sorted(chosen))["issues"].min()
    reasons = pd.read_csv(out / "reasons.csv")
    assert reasons.loc[reasons.kept, "reason"].str.contains("fewest review issues").all()
