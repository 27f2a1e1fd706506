"""Importers and exporters: VOC, CSV, YOLO, COCO agree with each other and with pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

import qualmet
from qualmet.dataset import Dataset
from qualmet.errors import DatasetError
from qualmet.formats import load_csv, load_voc, load_yolo, parse_coco, save_coco, save_yolo

from .conftest import make_coco


def _coco_api(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_raccoon_voc_and_csv_give_the_same_data_set(raccoon_dir):
    voc = load_voc(raccoon_dir / "annotations")
    csv = load_csv(raccoon_dir / "data" / "raccoon_labels.csv")
    assert len(voc.images) == len(csv.images) == 200
    assert len(voc.annotations) == len(csv.annotations) == 217
    assert voc.skipped == [] and csv.skipped == []
    assert voc.images[["id", "file_name", "width", "height"]].equals(csv.images[["id", "file_name", "width", "height"]])
    cols = ["id", "image_id", "category_id", "x", "y", "w", "h"]
    assert np.array_equal(voc.annotations[cols].to_numpy(), csv.annotations[cols].to_numpy())
    assert voc.category_names == {1: "raccoon"}
    # raccoon-1.xml: xmin 81, ymin 88, xmax 522, ymax 408
    a = voc.annotations.merge(voc.images, left_on="image_id", right_on="id", suffixes=("", "_img"))
    row = a[a.file_name == "raccoon-1.jpg"].iloc[0]
    assert (row.x, row.y, row.w, row.h) == (81, 88, 441, 320)
    assert voc.image_root.resolve() == (raccoon_dir / "images").resolve()


def test_coco_round_trip_through_pycocotools_is_exact(tmp_path, raccoon_dir):
    ds = load_voc(raccoon_dir / "annotations")
    path = save_coco(ds, tmp_path / "r.json")
    api = _coco_api(path)
    written = json.loads(path.read_text())
    assert api.dataset == written
    assert len(api.getImgIds()) == 200 and len(api.getAnnIds()) == 217
    again = qualmet.load_coco(path)
    assert again.to_coco() == written
    # a hand-made COCO dict with extra keys also survives load -> save unchanged
    d = make_coco()
    d["images"][0]["license"] = 3
    d["annotations"][1]["segmentation"] = [[1, 2, 3, 4, 5, 6]]
    (tmp_path / "in.json").write_text(json.dumps(d))
    out = save_coco(qualmet.load_coco(tmp_path / "in.json"), tmp_path / "out.json")
    assert json.loads(out.read_text()) == d
    assert _coco_api(out).dataset == d


def test_coco_saved_away_from_its_images_finds_them_through_the_sidecar(tmp_path, raccoon_dir):
    """COCO JSON has no image-root field: save_coco writes NAME.images (relative) when the images are
    not where loading would look by default, removes it when they are, and a wrong one is ignored."""
    ds = load_voc(raccoon_dir / "annotations")
    images = (raccoon_dir / "images").resolve()
    away = save_coco(ds, tmp_path / "labels" / "r.json")
    side = away.with_suffix(".images")
    assert side.is_file() and not Path(side.read_text().strip()).is_absolute()
    side_text = side.read_text()
    back = qualmet.load_coco(away)
    assert back.image_root == images and back.image_path(back.images.file_name.iloc[0]).is_file()
    assert qualmet.load_coco(away, images=tmp_path).image_root == tmp_path  # --images still wins
    moved = tmp_path / "moved"  # moved to a folder at the same depth: the relative path still holds
    (tmp_path / "labels").rename(moved)
    assert qualmet.load_coco(moved / "r.json").image_root == images
    # a sidecar naming a folder that is gone is an error naming both (not a silent other folder)
    (moved / "r.images").write_text("no/such/folder\n")
    with pytest.raises(DatasetError, match=r"r.images names the image folder no/such/folder .* does not exist"):
        qualmet.load_coco(moved / "r.json")
    assert qualmet.load_coco(moved / "r.json", images=tmp_path).image_root == tmp_path
    # a link to the JSON finds the sidecar beside the file it points to
    (tmp_path / "link.json").symlink_to(away.parent.parent / "moved" / "r.json")
    (moved / "r.images").write_text(side_text)
    assert qualmet.load_coco(tmp_path / "link.json").image_root == images
    # a COCO file cannot take its own sidecar's name; other names get their own sidecar
    with pytest.raises(DatasetError, match="cannot be named"):
        save_coco(ds, tmp_path / "x.images")
    save_coco(ds, tmp_path / "v" / "data.v1")
    assert (tmp_path / "v" / "data.v1.images").is_file()
    assert qualmet.load_coco(tmp_path / "v" / "data.v1").image_root == images
    # saved where the default finds the images: no sidecar, and a stale one is removed
    beside = tmp_path / "beside"
    (beside / "images").mkdir(parents=True)
    plain = Dataset.from_records([], [], [{"id": 1, "name": "raccoon"}], image_root=beside / "images")
    (beside / "d.images").write_text(str(images))
    save_coco(plain, beside / "d.json")
    assert not (beside / "d.images").exists()
    assert qualmet.load_coco(beside / "d.json").image_root == (beside / "images").resolve()


def test_yolo_export_then_import_gives_the_same_boxes(tmp_path, raccoon_dir):
    ds = load_voc(raccoon_dir / "annotations")
    subset_ids = ds.images["id"].iloc[:40].tolist()
    out = save_yolo(ds, tmp_path / "yolo", image_ids=subset_ids)
    assert (out / "classes.txt").read_text() == "raccoon\n"
    back = load_yolo(out / "labels", images=raccoon_dir / "images")
    # YOLO folders list only the labelled images present; compare on file names
    sub = ds.subset(subset_ids)
    back_imgs = back.images[back.images.file_name.isin(sub.images.file_name)]
    assert len(back_imgs) == 40
    cols = ["x", "y", "w", "h"]
    want = sub.annotations.merge(sub.images, left_on="image_id", right_on="id").sort_values(["file_name", "x"])
    got = back.annotations.merge(back.images, left_on="image_id", right_on="id")
    got = got[got.file_name.isin(sub.images.file_name)].sort_values(["file_name", "x"])
    assert len(got) == len(want)
    np.testing.assert_allclose(got[cols].to_numpy(), want[cols].to_numpy(), rtol=1e-6)


def test_subset_keeps_its_images_annotations_and_category_ids():
    ds = parse_coco(make_coco(n_images=4))
    sub = ds.subset([2, 4])
    assert sorted(sub.images["id"]) == [2, 4]
    assert set(sub.annotations["image_id"]) == {2, 4}
    assert len(sub.annotations) == 4
    assert sub.categories.equals(ds.categories)


def test_predictions_wholly_outside_their_image_are_a_warning(tmp_path):
    """A detector cannot predict outside the frame: such boxes mean predictions for other images."""
    import warnings

    ds = parse_coco(make_coco())  # 64x48 frames
    inside = [{"image_id": 1, "category_id": 1, "bbox": [60, 44, 30, 30], "score": 0.9},  # overlaps the frame
              {"image_id": 2, "category_id": 1, "bbox": [-5, -5, 6, 6], "score": 0.5}]
    (tmp_path / "ok.json").write_text(json.dumps(inside))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(qualmet.load_predictions(tmp_path / "ok.json", ds.images)) == 2
    outside = inside + [{"image_id": 3, "category_id": 1, "bbox": [64, 10, 5, 5], "score": 0.7},
                        {"image_id": 1, "category_id": 1, "bbox": [5, -20, 5, 20], "score": 0.7}]
    (tmp_path / "other.json").write_text(json.dumps(outside))
    with pytest.warns(qualmet.PredictionsWarning,
                      match=r"other.json: 2 of 4 predictions lie wholly outside their image \(first: prediction \[2\], "
                            r"image 3, box \[64, 10, 5, 5\] in a 64x48 frame\)"):
        df = qualmet.load_predictions(tmp_path / "other.json", ds.images)
    assert len(df) == 4  # loaded all the same
    unknown = ds.images.assign(width=np.nan, height=np.nan)  # sizes unknown: only the origin side can be told
    with pytest.warns(qualmet.PredictionsWarning, match=r"1 of 4 predictions .* in a frame of unknown size\)"):
        qualmet.load_predictions(tmp_path / "other.json", unknown)


def test_predictions_load_into_annotation_shape(tmp_path):
    ds = parse_coco(make_coco())
    preds = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
             {"image_id": 2, "category_id": 2, "bbox": [5, 6, 7, 8], "score": 0.1}]
    (tmp_path / "p.json").write_text(json.dumps(preds))
    df = qualmet.load_predictions(tmp_path / "p.json", ds.images)
    assert list(df["score"]) == [0.9, 0.1] and list(df["w"]) == [3, 7]
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]))
    with pytest.raises(qualmet.DatasetError, match=r"bad.json: 1 prediction on images not in the data set \(first: prediction \[0\], image_id 99\)"):
        qualmet.load_predictions(tmp_path / "bad.json", ds.images)


def test_convert_to_yolo_writes_a_folder_that_loads_back(tmp_path, raccoon_dir):
    """`qualmet convert --to yolo` writes images/ (hard links or copies) beside labels/ and classes.txt,
    so the folder itself is a data set: the same frames and boxes come back from load_dataset."""
    from qualmet.cli import main
    from qualmet.formats import load_dataset

    src = tmp_path / "src.json"
    ds = load_voc(raccoon_dir / "annotations")
    save_coco(ds.subset(ds.images["id"].iloc[:12].tolist()), src)
    assert main(["convert", str(src), "--images", str(raccoon_dir / "images"), "--to", "yolo",
                 "--out", str(tmp_path / "y")]) == 0
    back = load_dataset(tmp_path / "y")  # the folder, not its labels/ subfolder
    orig = load_dataset(src, images=raccoon_dir / "images")
    assert sorted(back.images.file_name) == sorted(orig.images.file_name) and not back.skipped
    key = ["file_name", "x"]
    a = orig.annotations.merge(orig.images, left_on="image_id", right_on="id").sort_values(key)
    b = back.annotations.merge(back.images, left_on="image_id", right_on="id").sort_values(key)
    np.testing.assert_allclose(b[["x", "y", "w", "h"]].to_numpy(), a[["x", "y", "w", "h"]].to_numpy(), rtol=1e-6)
    img = tmp_path / "y" / "images" / orig.images.file_name.iloc[0]
    assert img.read_bytes() == (raccoon_dir / "images" / img.name).read_bytes() and not img.is_symlink()


def test_yolo_folder_without_labels_or_images_is_an_error(tmp_path):
    from qualmet.errors import DatasetError
    from qualmet.formats import load_dataset

    (tmp_path / "classes.txt").write_text("panda\n")
    with pytest.raises(DatasetError, match="no YOLO label .* files and no images"):
        load_dataset(tmp_path)


def test_yolo_export_refuses_two_images_with_one_stem(tmp_path):
    from qualmet.errors import DatasetError

    ds = parse_coco(make_coco(n_images=2))
    ds.images.loc[:, "file_name"] = ["a/x.png", "b/x.png"]
    with pytest.raises(DatasetError, match="same name stem"):
        save_yolo(ds, tmp_path / "y")
