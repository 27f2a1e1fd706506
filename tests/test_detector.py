"""The fixed detector: it learns, save/load/predict round-trips exactly, an interrupted training
resumes to the same weights, cross-validation predicts only held-out frames, and the CLI works.

Uses the real recipe at a 128 px input on a tiny synthetic set so the whole file stays ~1-2 minutes.
"""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from qualmet.cli import main
from qualmet.detector.crossval import crossval
from qualmet.detector.data import DetectionData, IterationSampler, letterbox, split_images
from qualmet.detector.predictor import Predictor
from qualmet.detector.recipe import build_model, get_recipe
from qualmet.detector.train import train
from qualmet.detector.validation import recalibrate_bn
from qualmet.errors import QualmetError
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco

from .detector_helpers import ellipses, synth_set

SIZE = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """20 frames (16 train / 4 val), 120 iterations of the default recipe at 128 px."""
    root = tmp_path_factory.mktemp("det")
    data = synth_set(root / "data", 20, SIZE, seed=1)
    res = train(data, root / "model", val_fraction=0.2, iters=120, seed=0, device="cpu", input_size=SIZE,
                eval_every=40, checkpoint_every=60, progress=False)
    return data, res


def _paths(ds):
    return [ds.image_path(f) for f in ds.images["file_name"]]


@pytest.mark.slow
def test_training_learns(trained):
    data, res = trained
    log = res.log
    assert list(log["iter"]) == [40, 80, 120]
    assert log["train_loss"].iloc[-1] < 0.5 * log["train_loss"].iloc[0]
    assert log["val_loss"].notna().all() and log["val_AP"].notna().all()
    ds = load_coco(data)
    val_ids = json.loads((res.out_dir / "config.json").read_text())["val_image_ids"]
    assert len(val_ids) == 4
    train_ds = ds.subset([i for i in ds.images["id"] if i not in set(val_ids)])
    ap50 = evaluate(train_ds, res.predictor.predict_dataset(train_ds))["stats"]["AP50"]
    rec = res.predictor.recipe
    torch.manual_seed(0)
    rand = build_model(rec, 2)
    recalibrate_bn(rand, DetectionData(train_ds, SIZE), 8, torch.device("cpu"), False, 64, 0)
    rand_ap50 = evaluate(train_ds, Predictor(rand, rec, res.predictor.categories, "cpu").predict_dataset(train_ds))
    assert ap50 > 0.5, ap50
    assert ap50 > rand_ap50["stats"]["AP50"] + 0.4


@pytest.mark.slow
def test_model_dir_and_exact_reload(trained):
    data, res = trained
    for f in ("model.pt", "config.json", "categories.json", "train_log.csv", "loss_curves.png", "checkpoint.pt"):
        assert (res.out_dir / f).stat().st_size > 0, f
    assert len(pd.read_csv(res.out_dir / "train_log.csv")) == 3
    paths = _paths(load_coco(data))[:6]
    before = res.predictor.predict(paths)
    after = Predictor.load(res.out_dir, device="cpu").predict(paths)
    assert sum(len(b["scores"]) for b in before) > 0
    for b, a in zip(before, after):
        for k in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(b[k], a[k])
    assert set(np.concatenate([b["labels"] for b in before])) <= {1, 2}  # category ids, not model labels


@pytest.mark.slow
def test_boxes_come_back_in_original_pixels(trained):
    data, res = trained
    ds = load_coco(data)
    img = cv2.imread(str(_paths(ds)[0]))[:, :, ::-1]
    wide = np.full((SIZE, 2 * SIZE, 3), 90, np.uint8)  # 256x128: letterboxed at scale 0.5 with padding below
    wide[:, :SIZE] = img
    wide = cv2.resize(wide, (2 * SIZE, SIZE))
    seen, scale = letterbox(wide, SIZE)  # exactly what the network sees
    assert scale == (0.5, 0.5)
    det_wide, det_seen = res.predictor.predict([wide, seen], score_threshold=0.05)
    assert len(det_seen["boxes"]) > 0
    np.testing.assert_array_equal(det_wide["scores"], det_seen["scores"])
    np.testing.assert_array_equal(det_wide["labels"], det_seen["labels"])
    expected = det_seen["boxes"].copy()  # the letterboxed content fills the top SIZE/2 rows of `seen`
    expected[:, 3] = np.minimum(expected[:, 1] + expected[:, 3], SIZE / 2) - expected[:, 1]
    np.testing.assert_allclose(det_wide["boxes"], 2 * expected, rtol=1e-5, atol=1e-3)
    assert (det_wide["boxes"][:, 1] + det_wide["boxes"][:, 3] <= SIZE + 1e-3).all()  # clipped to the frame


@pytest.mark.slow
def test_cli_predict_evaluate_summary(trained, tmp_path, capsys):
    data, res = trained
    assert main(["predict", str(res.out_dir), str(data), "--out", str(tmp_path / "preds.json")]) == 0
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds and set(preds[0]) == {"image_id", "category_id", "bbox", "score"}
    assert main(["evaluate", str(data), str(tmp_path / "preds.json"), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["stats"]["AP50"] > 0.3
    assert main(["summary", str(res.out_dir), "--diagram", str(tmp_path / "arch.png")]) == 0
    out = capsys.readouterr().out
    assert "input 128x128x3" in out and "total parameters 2,2" in out and "backbone.extra.0" in out
    assert (tmp_path / "arch.png").stat().st_size > 0


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, caplog):
    data = ellipses(tmp_path / "data", 8, 96, seed=2)
    kw = dict(val_fraction=0.25, iters=6, seed=3, device="cpu", input_size=96, batch_size=4, eval_every=3,
              checkpoint_every=2, bn_recalib_images=8, progress=False)
    with caplog.at_level(logging.INFO, logger="qualmet"):
        full = train(data, tmp_path / "full", **kw)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter 6:")]
    assert len(logged) == 1 and "val loss" in logged[0] and "nan" not in logged[0]

    def interrupt(it, info):
        if it == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "cut", callback=interrupt, **kw)
    assert not (tmp_path / "cut" / "model.pt").exists()
    resumed = train(data, tmp_path / "cut", **kw)
    assert resumed.resumed_from == 4
    a, b = full.predictor.model.state_dict(), resumed.predictor.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    cols = ["iter", "lr", "train_loss", "val_loss", "val_AP"]
    pd.testing.assert_frame_equal(full.log[cols], resumed.log[cols])
    again = train(data, tmp_path / "cut", **kw)  # finished: nothing to redo
    assert again.resumed_from == 6
    with pytest.raises(QualmetError, match="different training"):
        train(data, tmp_path / "cut", **{**kw, "seed": 4})
    # a finished folder whose checkpoint was deleted to save space is still finished, and still refuses
    # another training (it was silently retrained and overwritten)
    (tmp_path / "cut" / "checkpoint.pt").unlink()
    weights = (tmp_path / "cut" / "model.pt").read_bytes()
    again = train(data, tmp_path / "cut", **kw)
    assert again.resumed_from == 6 and (tmp_path / "cut" / "model.pt").read_bytes() == weights
    b = again.predictor.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(QualmetError, match="different training .*seed.* no checkpoint.pt"):
        train(data, tmp_path / "cut", **{**kw, "seed": 4})
    assert (tmp_path / "cut" / "model.pt").read_bytes() == weights and not (tmp_path / "cut" / "checkpoint.pt").exists()
    with pytest.raises(QualmetError, match="val_fraction must be at least 0 and below 1, got nan"):
        train(data, tmp_path / "nan", **{**kw, "val_fraction": float("nan")})


@pytest.mark.slow
def test_crossval_predicts_held_out_frames(tmp_path):
    data = ellipses(tmp_path / "data", 8, 96, seed=5)
    out = tmp_path / "oof.json"
    preds = crossval(data, folds=2, out=out, iters=3, seed=0, device="cpu", input_size=96, batch_size=4,
                     eval_every=3, bn_recalib_images=8, progress=False)
    assign = {int(k): v for k, v in json.loads((tmp_path / "oof_folds" / "folds.json").read_text())["assignment"].items()}
    assert sorted(assign) == list(range(1, 9)) and sorted(set(assign.values())) == [0, 1]
    assert (preds["image_id"].map(assign) == preds["fold"]).all()  # each frame predicted by its held-out model
    for k in (0, 1):
        cfg = json.loads((tmp_path / "oof_folds" / f"fold_{k}" / "model" / "config.json").read_text())
        assert cfg["n_train_images"] == 4 and sorted(cfg["val_image_ids"]) == sorted(i for i, f in assign.items() if f == k)
    assert len(json.loads(out.read_text())) == len(preds)


def test_data_letterbox_flip_and_sampler(tmp_path):
    img = np.zeros((100, 200, 3), np.uint8)
    boxed, scale = letterbox(img, 128)
    assert boxed.shape == (128, 128, 3) and scale == pytest.approx((0.64, 0.64)) and boxed[70, 0, 0] == 114
    data = ellipses(tmp_path / "d", 3, 64, seed=0)
    ds = load_coco(data)
    d = DetectionData(ds, 128)
    _, t = d[0]
    _, tf = d[(0, True)]
    x1, y1, x2, y2 = (ds.annotations[ds.annotations.image_id == 1][["x", "y", "w", "h"]].to_numpy()[0] * 2).tolist()
    np.testing.assert_allclose(t["boxes"][0].numpy(), [x1, y1, x1 + x2, y1 + y2], rtol=1e-5)
    np.testing.assert_allclose(tf["boxes"][0].numpy(), [128 - x1 - x2, y1, 128 - x1, y1 + y2], rtol=1e-5)
    s = IterationSampler(5, 3, seed=1, start=0, stop=6, hflip=0.5)
    batches = list(s)
    assert batches[2:] == list(IterationSampler(5, 3, seed=1, start=2, stop=6, hflip=0.5))  # resumable
    first_epoch = [i for b in batches for i, _ in b][:5]
    assert sorted(first_epoch) == list(range(5))
    tr, va = split_images(range(1, 11), 0.2, seed=0)
    assert len(va) == 2 and sorted(tr + va) == list(range(1, 11)) and split_images(range(1, 11), 0.2, 0) == (tr, va)


def test_recipes_build_and_errors(tmp_path):
    m = build_model(get_recipe("fcos_resnet18", input_size=96), 3)
    m.eval()
    with torch.no_grad():
        out = m([torch.rand(3, 96, 96)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    with pytest.raises(QualmetError, match="unknown recipe"):
        get_recipe("yolo")
    with pytest.raises(QualmetError, match="not a model folder"):
        Predictor.load(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(QualmetError, match=r"config.json: not a readable model config \(JSONDecodeError"):
        Predictor.load(tmp_path)
    data = ellipses(tmp_path / "d", 2, 64, seed=0)
    for kw, words in (({"batch_size": 0}, "batch_size must be at least 1, got 0"),
                      ({"input_size": 0}, "input_size must be at least 32 px, got 0"),
                      ({"lr": -1.0}, "lr must be positive")):
        with pytest.raises(QualmetError, match=words):
            train(data, tmp_path / "m", iters=1, device="cpu", progress=False, **kw)


@pytest.mark.slow
def test_cli_train_and_crossval(tmp_path, capsys):
    data = ellipses(tmp_path / "data", 6, 96, seed=6)
    args = ["--iters", "2", "--input-size", "96", "--batch-size", "4", "--device", "cpu"]
    assert main(["train", str(data), "--out", str(tmp_path / "m"), *args]) == 0
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["recipe"]["iters"] == 2 and cfg["recipe"]["input_size"] == 96 and len(cfg["val_image_ids"]) == 1
    assert main(["train", str(data), "--out", str(tmp_path / "m"), *args, "--seed", "9"]) == 2  # other training
    assert "different training" in capsys.readouterr().err
    assert main(["crossval", str(data), "--folds", "3", "--out", str(tmp_path / "oof.json"), *args]) == 0
    preds = json.loads((tmp_path / "oof.json").read_text())
    assert {p["image_id"] for p in preds} <= set(range(1, 7))
    assert sorted(p.name for p in (tmp_path / "oof_folds").iterdir()) == ["fold_0", "fold_1", "fold_2", "folds.json"]


class _PaddingReacher(torch.nn.Module):
    """A stand-in detector: one box per input that runs from the image into the letterbox padding."""

    def forward(self, images):
        s = images[0].shape[-1]
        return [{"boxes": torch.tensor([[4.0, 4.0, s - 1.0, s - 1.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


def test_validation_detections_are_clipped_like_the_predictors(tmp_path):
    """The val AP in train_log.csv comes from detect(); it must see the boxes Predictor returns
    (clipped to the image), or the log and `qualmet evaluate` disagree on non-square frames."""
    from qualmet.detector.validation import detect

    data = ellipses(tmp_path / "d", 2, 96, seed=0)
    ds = load_coco(data)
    for k in range(2):  # make the frames 96 x 48 (wide), so the bottom half of the square is padding
        p = ds.image_path(ds.images["file_name"].iloc[k])
        cv2.imwrite(str(p), cv2.imread(str(p))[:48])
    ds.images["height"] = 48
    dd = DetectionData(ds, 64)
    got = detect(_PaddingReacher(), dd, 2, torch.device("cpu"), False)
    scale = 64 / 96
    assert got["y"].tolist() == pytest.approx([4 / scale] * 2)
    assert (got["y"] + got["h"]).tolist() == pytest.approx([48.0, 48.0])  # not 63 / scale = 94.5
    assert (got["x"] + got["w"]).tolist() == pytest.approx([63 / scale] * 2)
    pred = Predictor(_PaddingReacher(), get_recipe(input_size=64), [{"id": 1, "name": "e"}], torch.device("cpu"))
    for (x, y, w, h), r in zip((o["boxes"][0] for o in pred.predict(_paths(ds))), got.itertuples()):
        assert [x, y, w, h] == pytest.approx([r.x, r.y, r.w, r.h])


def test_unletterbox_is_exact_per_axis_and_drops_boxes_in_the_padding():
    """The shorter side is resized to whole pixels, so its scale is not the longer side's: a 3000x100
    frame at 256 px has 9 rows (0.09 px per pixel, not 0.0853); the midline came back at y = 52.7."""
    from qualmet.detector.data import unletterbox

    for h, w, size in ((100, 3000, 256), (333, 1000, 256), (7, 5, 256)):
        seen, scale = letterbox(np.zeros((h, w, 3), np.uint8), size)
        rows, cols = np.where(seen[..., 0] != 114)
        nh, nw = rows.max() + 1, cols.max() + 1
        xywh, keep = unletterbox(torch.tensor([[0.0, 0.0, nw, nh], [0.0, nh / 2, nw, nh], [0.0, nh + 2.0, nw, size]]),
                                 scale, w, h)
        np.testing.assert_allclose(xywh[:2], [[0, 0, w, h], [0, h / 2, w, h / 2]], atol=1e-9)
        assert keep.tolist() == [True, True, False]  # the third lies wholly in the padding below the frame
        assert xywh[2, 3] == 0


@pytest.mark.slow
def test_predict_inputs_one_bad_file_and_array_forms(trained, tmp_path):
    data, res = trained
    p = res.predictor
    good = _paths(load_coco(data))[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="1 image\\(s\\) could not be read"):
        out = p.predict([good[0], bad, good[1]], score_threshold=0.05)
    assert len(out) == 3 and "broken.png" in out[1]["error"] and len(out[1]["boxes"]) == 0
    assert p.skipped == [out[1]["error"]]
    alone = p.predict(good, score_threshold=0.05)
    assert p.skipped == []
    for a, b in zip((out[0], out[2]), alone):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
    rgb = cv2.imread(str(good[0]))[:, :, ::-1]
    grey = np.ascontiguousarray(rgb[:, :, 1])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    d_grey, d_grey3, d_rgba, d_rgb = p.predict([grey, np.dstack([grey] * 3), rgba, rgb], score_threshold=0.05)
    np.testing.assert_array_equal(d_grey["scores"], d_grey3["scores"])
    np.testing.assert_array_equal(d_rgba["boxes"], d_rgb["boxes"])
    for wrong, words in ((rgb / 255.0, r"dtype float64; convert it, e.g. \(a \* 255\)"),
                         (rgb.astype(np.uint16) * 257, r"dtype uint16; convert it, e.g. \(a >> 8\)"),
                         (rgb[:, :, :2], "got shape")):
        with pytest.raises(QualmetError, match=words):
            p.predict([wrong])


@pytest.mark.slow
def test_cli_predict_says_which_frames_it_could_not_read(trained, tmp_path, capsys):
    data, res = trained
    ds = load_coco(data)
    broken = ds.image_path(ds.images["file_name"].iloc[0])
    copy = tmp_path / "d"
    import shutil

    shutil.copytree(data.parent, copy)
    (copy / broken.relative_to(data.parent)).write_bytes(b"truncated")
    rc = main(["predict", str(res.out_dir), str(copy / data.name), "--out", str(tmp_path / "p.json")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"on {len(ds.images) - 1} of {len(ds.images)} frames" in out
    assert "1 frame(s) could not be read" in err and broken.name in err
    preds = json.loads((tmp_path / "p.json").read_text())
    assert preds and int(ds.images["id"].iloc[0]) not in {r["image_id"] for r in preds}


@pytest.mark.slow
def test_a_frame_whose_file_name_leaves_the_image_root_is_skipped_not_the_run(trained, tmp_path):
    import shutil

    data, res = trained
    ds = load_coco(data)
    root = tmp_path / "root"
    root.mkdir()
    for fn in ds.images["file_name"].iloc[:2]:
        shutil.copy(ds.image_path(fn), root / fn)
    (tmp_path / "outside.png").write_bytes(ds.image_path(ds.images["file_name"].iloc[2]).read_bytes())
    (root / "escape.png").symlink_to(tmp_path / "outside.png")
    sub = ds.subset(ds.images["id"].iloc[:3])
    sub.images.loc[sub.images.index[2], "file_name"] = "escape.png"
    sub.image_root = root
    p = res.predictor
    with pytest.warns(UserWarning, match="1 frame\\(s\\) could not be read"):
        preds = p.predict_dataset(sub)
    assert len(p.skipped) == 1 and "escape.png" in p.skipped[0] and "outside the image root" in p.skipped[0]
    assert set(preds["image_id"]) <= set(int(i) for i in sub.images["id"].iloc[:2]) and len(preds)


@pytest.mark.slow
def test_damaged_model_folders_are_one_line_errors_naming_the_file(trained, tmp_path):
    import shutil

    _, res = trained

    def folder(name, edit=None):
        d = tmp_path / name
        shutil.copytree(res.out_dir, d)
        if edit is not None:
            cfg = json.loads((d / "config.json").read_text())
            edit(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        return d

    d = folder("str_size", lambda c: c["recipe"].update(input_size="128"))
    with pytest.raises(QualmetError, match=r"str_size/config.json: .*input_size must be int, got '128'"):
        Predictor.load(d, "cpu")
    d = folder("new_field", lambda c: c["recipe"].update(mosaic=0.5))
    with pytest.raises(QualmetError, match=r"new_field/config.json: .*unknown field\(s\) mosaic"):
        Predictor.load(d, "cpu")
    d = folder("renamed", lambda c: c["categories"][0].update(name="not_what_it_learned"))
    with pytest.raises(QualmetError, match=r"renamed/config.json: .*categories differ from categories.json"):
        Predictor.load(d, "cpu")
    d = folder("more_cats", lambda c: c["categories"].append({"id": 9, "name": "x"}))
    cats = json.loads((d / "categories.json").read_text()) + [{"id": 9, "name": "x"}]
    (d / "categories.json").write_text(json.dumps(cats))  # both say 3 classes; the weights know 2
    with pytest.raises(QualmetError, match=r"more_cats/model.pt: does not fit the model config.json describes"):
        Predictor.load(d, "cpu")
    d = folder("old_truncated", lambda c: c.pop("outputs"))  # a folder from before checksums, weights cut short
    (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:1000])
    with pytest.raises(QualmetError, match=r"old_truncated/model.pt: cannot be read as model weights"):
        Predictor.load(d, "cpu")
    d = folder("outputs_str", lambda c: c.update(outputs="x"))
    with pytest.raises(QualmetError, match=r"outputs_str/config.json: .*'outputs' must be a table"):
        Predictor.load(d, "cpu")
