"""Ultralytics: a data set in its documented layout (data.yaml, images/{train,val}, labels/{train,val}, YOLO-seg
polygons) converts to COCO and back with the same boxes and polygons; its predictions keyed by file stem
score the same frames as predictions keyed by image id."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from qualmet.cli import main
from qualmet.errors import DatasetError
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco, load_dataset, load_predictions, save_coco

# (split, stem, width, height, label lines): boxes are "class cx cy w h", polygons "class x1 y1 x2 y2 ..."
FRAMES = [
    ("train", "000012", 80, 60, ["0 0.5 0.5 0.25 0.5", "1 0.1 0.1 0.4 0.1 0.4 0.5 0.2 0.6"]),
    ("train", "street_a", 64, 48, ["1 0.3125 0.25 0.125 0.1666666667"]),
    ("train", "empty", 40, 40, []),  # a background image: no label file at all
    ("val", "000007", 100, 50, ["0 0.2 0.2 0.3 0.3 0.25 0.7", "1 0.75 0.5 0.3 0.6", "0 0.9 0.9 0.1 0.1"]),
    ("val", "park", 72, 96, ["0 0.05 0.05 0.95 0.05 0.95 0.95 0.05 0.95"]),
]


def _expected(frame) -> list[tuple[str, list[float], list[float] | None]]:
    """(class name, pixel box, pixel polygon or None) per label line, computed from the line itself."""
    _, _, w, h, lines = frame
    out = []
    for line in lines:
        v = [float(x) for x in line.split()[1:]]
        name = ["person", "bicycle"][int(line.split()[0])]
        if len(v) == 4:
            out.append((name, [(v[0] - v[2] / 2) * w, (v[1] - v[3] / 2) * h, v[2] * w, v[3] * h], None))
        else:
            xs, ys = np.array(v[0::2]) * w, np.array(v[1::2]) * h
            out.append((name, [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()],
                        [c for xy in zip(xs, ys) for c in xy]))
    return out


def _layout(root: Path, frames=FRAMES, yaml_text: str | None = None) -> Path:
    """The layout Ultralytics documents: root/images/<split>/<stem>.jpg, root/labels/<split>/<stem>.txt,
    and a data.yaml one folder up naming ``path`` (the root), the splits and the class names."""
    for split, stem, w, h, lines in frames:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), np.full((h, w, 3), 128, np.uint8))
        if lines:
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    y = root.parent / f"{root.name}.yaml"
    y.write_text(yaml_text or f"path: {root.name}  # dataset root dir\ntrain: images/train  # relative to 'path'\n"
                              "val: images/val\ntest:  # optional\n\nnames:\n  0: person\n  1: bicycle\n")
    return y


def _by_frame(ds) -> dict:
    """file stem -> sorted [(class name, box, polygon)] for comparisons independent of ids."""
    names = ds.category_names
    fn = ds.images.set_index("id")["file_name"]
    out: dict = {Path(f).stem: [] for f in fn}
    segs = ds.annotations["segmentation"] if "segmentation" in ds.annotations else [None] * len(ds.annotations)
    for r, seg in zip(ds.annotations.itertuples(), segs):
        poly = seg[0] if isinstance(seg, list) else None
        out[Path(fn[r.image_id]).stem].append((names[r.category_id], [r.x, r.y, r.w, r.h], poly))
    return {k: sorted(v, key=lambda o: (o[0], o[1])) for k, v in out.items()}


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for stem in want:
        assert [o[0] for o in got[stem]] == [o[0] for o in want[stem]], stem
        for g, w in zip(got[stem], want[stem]):
            np.testing.assert_allclose(g[1], w[1], rtol=1e-6, atol=1e-9)
            assert (g[2] is None) == (w[2] is None), stem
            if w[2] is not None:
                np.testing.assert_allclose(g[2], w[2], rtol=1e-6, atol=1e-9)


def test_documented_layout_round_trips_through_coco(tmp_path):
    y = _layout(tmp_path / "ul")
    ds = load_dataset(y)
    want = {stem: sorted(_expected(f), key=lambda o: (o[0], o[1])) for f in FRAMES for stem in [f[1]]}
    _assert_same(_by_frame(ds), want)
    assert ds.images.set_index("file_name")["split"].to_dict() == {f"images/{s}/{st}.jpg": s for s, st, *_ in FRAMES}
    assert list(ds.categories["name"]) == ["person", "bicycle"]
    assert ds.image_path(ds.images["file_name"].iat[0]).is_file()
    # COCO -> Ultralytics -> COCO, through the command line
    assert main(["convert", str(y), "--out", str(tmp_path / "a.json")]) == 0
    assert main(["convert", str(tmp_path / "a.json"), "--to", "ultralytics", "--out", str(tmp_path / "ul2")]) == 0
    assert sorted(p.relative_to(tmp_path / "ul2").as_posix() for p in (tmp_path / "ul2" / "labels").rglob("*.txt")) \
        == sorted(f"labels/{s}/{st}.txt" for s, st, *_ in FRAMES)
    assert main(["convert", str(tmp_path / "ul2"), "--out", str(tmp_path / "b.json")]) == 0
    back = load_coco(tmp_path / "b.json")
    _assert_same(_by_frame(back), want)
    assert back.images.set_index("file_name")["split"].to_dict() == ds.images.set_index("file_name")["split"].to_dict()
    assert main(["convert", str(y), "--split", "val", "--out", str(tmp_path / "val.json")]) == 0
    assert sorted(Path(f).stem for f in load_coco(tmp_path / "val.json").images["file_name"]) == ["000007", "park"]


def test_names_as_a_list_no_path_and_the_layout_without_yaml(tmp_path, capsys):
    root = tmp_path / "ul"
    y = _layout(root, yaml_text="train: images/train\nval: images/val\nnames: [person, bicycle]\n")
    (root / "data.yaml").write_text(y.read_text())  # data.yaml inside the root: no 'path' means its folder
    y.unlink()
    a = load_dataset(root)
    assert main(["convert", str(root / "data.yaml"), "--out", str(tmp_path / "a.json")]) == 0
    (root / "data.yaml").unlink()
    assert main(["convert", str(root), "--out", str(tmp_path / "x.json")]) == 2  # no class names anywhere
    assert "--names" in capsys.readouterr().err
    (tmp_path / "classes.txt").write_text("person\nbicycle\n")
    assert main(["convert", str(root), "--names", str(tmp_path / "classes.txt"), "--out", str(tmp_path / "b.json")]) == 0
    _assert_same(_by_frame(load_coco(tmp_path / "b.json")), _by_frame(a))


def test_bad_yaml_names_are_one_error(tmp_path):
    for text, words in (("train: images/train\nnames: {0: a, 2: b}\n", "without gaps"),
                        ("train: images/train\n", "no 'names'"),
                        ("train: images/train\nnames: [a, a]\n", "given twice"),
                        ("train: [images/train\nnames: [a]\n", "cannot read this YAML")):
        (tmp_path / "d.yaml").write_text(text)
        with pytest.raises(DatasetError, match=words):
            load_dataset(tmp_path / "d.yaml")


def _predictions(ds, key) -> list[dict]:
    """Detector-like predictions for ``ds`` (jittered boxes, one miss, one spurious box per frame),
    the image named by ``key(image row)``."""
    rng = np.random.default_rng(0)
    recs = []
    for im in ds.images.itertuples():
        for r in ds.annotations[ds.annotations["image_id"] == im.id].itertuples():
            j = rng.normal(0, 0.08, 4) * [r.w, r.h, r.w, r.h]
            recs.append({"image_id": key(im), "category_id": int(r.category_id),
                         "bbox": [r.x + j[0], r.y + j[1], r.w + j[2], r.h + j[3]], "score": float(rng.uniform(0.2, 1))})
        recs.append({"image_id": key(im), "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.3})
    return recs[1:]


def _ultralytics_id(im) -> int | str:
    """As Ultralytics' predictions.json writes it: the stem, as a number when it is all digits."""
    stem = Path(im.file_name).stem
    return int(stem) if stem.isnumeric() else stem


def test_stem_keyed_predictions_score_the_same_frames(tmp_path, capsys):
    y = _layout(tmp_path / "ul")
    save_coco(load_dataset(y, split="val"), tmp_path / "val.json")
    gt = load_coco(tmp_path / "val.json")
    (tmp_path / "by_id.json").write_text(json.dumps(_predictions(gt, lambda im: int(im.id))))
    (tmp_path / "by_stem.json").write_text(json.dumps(_predictions(gt, _ultralytics_id)))
    by_id = evaluate(gt, load_predictions(tmp_path / "by_id.json", gt))
    by_stem_preds = load_predictions(tmp_path / "by_stem.json", gt, match_by="file_name")
    by_stem = evaluate(gt, by_stem_preds)
    assert by_stem["stats"] == by_id["stats"] and by_id["stats"]["AP50"] > 0
    pd.testing.assert_frame_equal(by_stem["gt_flags"], by_id["gt_flags"])
    pd.testing.assert_frame_equal(by_stem["pred_flags"], by_id["pred_flags"])
    with pytest.raises(DatasetError, match=r"by_stem.json: prediction \[\d+\]: image_id must be an integer, got "
                                           r"'park' .*--match-by file_name"):
        load_predictions(tmp_path / "by_stem.json", gt)
    for how in ("id", "file_name"):
        src = "by_id.json" if how == "id" else "by_stem.json"
        assert main(["evaluate", str(tmp_path / "val.json"), str(tmp_path / src), "--match-by", how,
                     "--out", str(tmp_path / how)]) == 0
    assert json.loads((tmp_path / "id" / "metrics.json").read_text())["stats"] == \
        json.loads((tmp_path / "file_name" / "metrics.json").read_text())["stats"]
    for how in ("id", "file_name"):  # metrics from the same predictions, named either way: the same table
        src = "by_id.json" if how == "id" else "by_stem.json"
        assert main(["metrics", "run", str(tmp_path / "val.json"), "--predictions", str(tmp_path / src),
                     "--match-by", how, "--metrics", "confidence", "--workers", "1", "--no-progress",
                     "--out", str(tmp_path / f"run_{how}")]) == 0
    tables = [pd.read_parquet(tmp_path / f"run_{how}" / "objects.parquet") for how in ("id", "file_name")]
    pd.testing.assert_frame_equal(*tables)
    assert tables[0]["confidence"].notna().all() and tables[0]["confidence"].gt(0).any()
    # a stem two splits share cannot name one frame
    (tmp_path / "ul" / "images" / "val" / "street_a.jpg").write_bytes(
        (tmp_path / "ul" / "images" / "train" / "street_a.jpg").read_bytes())
    both = load_dataset(y)
    (tmp_path / "amb.json").write_text(json.dumps([{"image_id": "street_a", "category_id": 1, "bbox": [1, 1, 4, 4],
                                                    "score": 0.5}]))
    with pytest.raises(DatasetError, match=r"amb.json: prediction \[0\]: image 'street_a' names 2 images "
                                           r"\(images/train/street_a.jpg, images/val/street_a.jpg\)"):
        load_predictions(tmp_path / "amb.json", both, match_by="file_name")


def test_yolo_prediction_txts_with_confidence_convert_to_predictions(tmp_path):
    """Ultralytics' predict --save-txt --save-conf writes 'class cx cy w h conf' per box; converted with the
    frames' images and the class names, they are predictions that match the data set by file name."""
    y = _layout(tmp_path / "ul")
    gt = load_dataset(y, split="val")
    lab = tmp_path / "predict" / "labels"
    lab.mkdir(parents=True)
    (lab / "000007.txt").write_text("0 0.5 0.5 0.2 0.2 0.875\n1 0.75 0.5 0.3 0.6 0.5\n"
                                    "0 0.2 0.2 0.3 0.3 0.25 0.7 0.625\n")  # a polygon with its confidence
    assert main(["convert", str(lab), "--images", str(tmp_path / "ul" / "images" / "val"), "--names", str(y),
                 "--out", str(tmp_path / "p.json")]) == 0
    preds = load_predictions(tmp_path / "p.json", gt, match_by="file_name")
    assert sorted(preds["score"]) == [0.5, 0.625, 0.875]
    frame = int(gt.images.loc[gt.images["file_name"].str.endswith("000007.jpg"), "id"].item())
    assert set(preds["image_id"]) == {frame}
    np.testing.assert_allclose(preds.sort_values("score")[["x", "y", "w", "h"]].to_numpy()[0], [60, 10, 30, 30])


def test_one_split_labels_folder_finds_its_images(tmp_path):
    """`convert ul/labels/train --names data.yaml`: the images are where Ultralytics' rule puts them."""
    y = _layout(tmp_path / "ul")
    one = load_dataset(tmp_path / "ul" / "labels" / "train", names=y)
    whole = load_dataset(y, split="train")
    assert sorted(one.images["file_name"]) == ["000012.jpg", "empty.jpg", "street_a.jpg"]
    assert [[o[:2] for o in v] for v in _by_frame(one).values()] == [[o[:2] for o in v] for v in _by_frame(whole).values()]


def test_bad_label_lines_and_files_are_named_not_fatal(tmp_path):
    y = _layout(tmp_path / "ul")
    (tmp_path / "ul" / "labels" / "val" / "park.txt").write_bytes(b"0 0.5 \xff\n")
    (tmp_path / "ul" / "labels" / "train" / "street_a.txt").write_text("0 0.5 0.5 0.2\n5 0.5 0.5 0.2 0.2\n")
    ds = load_dataset(y, on_invalid="skip")
    msgs = sorted(f"{Path(p.file).name}: {p.item}: {p.message}" for p in ds.skipped)
    assert msgs[0].startswith("park.txt: park.jpg: cannot read this label file")
    assert msgs[1:] == ["street_a.txt: line 1: expected 5 fields 'class cx cy w h', got 4 (6 with a confidence; 7 or "
                        "more for a polygon 'class x1 y1 x2 y2 x3 y3 ...')",
                        "street_a.txt: line 2: class 5 not in ul.yaml (2 names)"]
    with pytest.raises(DatasetError, match=r"ul.yaml: 3 item\(s\) cannot be loaded"):
        load_dataset(y)
