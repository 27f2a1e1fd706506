"""Edges of importing, converting and showing data sets that once lost data or crashed: each now
loads exactly, or is refused with a message naming the file and item, before anything is written."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from qualmet.cli import main
from qualmet.dataset import Dataset
from qualmet.errors import DatasetError, QualmetError
from qualmet.formats import load_coco, load_csv, load_dataset, load_voc, load_yolo, save_coco, save_yolo
from qualmet.imageio import image_size
from qualmet.validate import validate


def _jpg(path: Path, w: int = 64, h: int = 48, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def _coco(root: Path, names: list[str], boxes: list[tuple[int, list[float]]]) -> Dataset:
    for n in set(names):
        _jpg(root / "images" / n)
    images = [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names, start=1)]
    anns = [{"id": k, "image_id": i, "category_id": 1, "bbox": b} for k, (i, b) in enumerate(boxes, start=1)]
    return Dataset.from_records(images, anns, [{"id": 1, "name": "panda"}], image_root=root / "images")


def _yolo_root(tmp_path: Path, label: str, names_file: str, names: str) -> Path:
    """ROOT/images/a.jpg, ROOT/labels/a.txt holding ``label``, and a class-names file."""
    root = tmp_path / "y"
    _jpg(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(label)
    (root / names_file).write_text(names)
    return root


def test_two_records_naming_one_file_are_an_error_and_not_exported(tmp_path):
    ds = _coco(tmp_path, ["a.jpg", "a.jpg"], [(1, [1, 1, 10, 10]), (2, [20, 20, 10, 10])])
    hits = [p for p in validate(ds) if "name the same file 'a.jpg'" in p.message]
    assert len(hits) == 1 and hits[0].severity == "error" and hits[0].item == "images 1, 2"
    with pytest.raises(DatasetError, match="images 1 and 2 are both named 'a.jpg'"):
        save_yolo(ds, tmp_path / "y")
    assert not (tmp_path / "y").exists()  # refused before anything is written


def test_yolo_images_sharing_a_stem_are_reported_not_dropped(tmp_path):
    root = tmp_path / "y"
    _jpg(root / "images" / "x.jpg")
    _jpg(root / "images" / "x.png", 100, 80)
    _jpg(root / "images" / "z.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("panda\n")
    ds = load_yolo(root)
    assert list(ds.images["file_name"]) == ["z.jpg"]
    [p] = ds.skipped
    assert "x.jpg and x.png share the name stem 'x'" in p.message
    with pytest.raises(DatasetError, match="share the name stem"):
        load_dataset(root)  # on_invalid="raise": nothing is dropped without an error


def test_an_image_named_classes_round_trips_through_yolo(tmp_path):
    ds = _coco(tmp_path, ["classes.jpg", "b.jpg"], [(1, [2, 3, 20, 10]), (2, [5, 5, 30, 30])])
    out = save_yolo(ds, tmp_path / "y", link_images=True)
    assert (out / "labels" / "classes.txt").is_file() and (out / "classes.txt").read_text() == "panda\n"
    back = load_yolo(out)
    assert not back.skipped
    assert sorted(back.images["file_name"]) == ["b.jpg", "classes.jpg"]
    got = back.annotations.merge(back.images, left_on="image_id", right_on="id")
    box = got.loc[got.file_name == "classes.jpg", ["x", "y", "w", "h"]].to_numpy()
    assert np.allclose(box, [[2, 3, 20, 10]], atol=1e-6)


def test_blank_line_inside_classes_txt_is_an_error(tmp_path):
    root = _yolo_root(tmp_path, "1 0.5 0.5 0.2 0.2\n", "classes.txt", "cat\n\ndog\n\n\n")
    with pytest.raises(DatasetError, match="classes.txt: line 2 is blank"):
        load_yolo(root)
    (root / "classes.txt").write_text("cat\ndog\n\n")  # blank lines at the end are fine
    assert load_yolo(root).category_names == {1: "cat", 2: "dog"}


@pytest.mark.parametrize("w,h", [("0", "0"), ("-5", "10"), ("inf", "100"), ("1e20", "10"), ("12.5", "10"), ("x", "1")])
def test_unusable_image_sizes_are_record_problems_in_voc_and_csv(tmp_path, w, h):
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(f"<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height>"
                               "</size><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
                               "<ymax>5</ymax></bndbox></object></annotation>")
    (voc / "b.xml").write_text("<annotation><filename>b.jpg</filename><size><width>64</width><height>48</height>"
                               "</size></annotation>")
    ds = load_voc(voc)
    assert list(ds.images["file_name"]) == ["b.jpg"]
    assert len(ds.skipped) == 1 and ds.skipped[0].file.endswith("a.xml") and "<size>" in ds.skipped[0].message
    csv = tmp_path / "d.csv"
    csv.write_text(f"filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,{w},{h},cat,1,1,5,5\nb.jpg,64,48,cat,1,1,5,5\n")
    ds = load_csv(csv)
    assert list(ds.images["file_name"]) == ["b.jpg"]
    assert len(ds.skipped) == 1 and ds.skipped[0].item == "line 2 (a.jpg)"
    with pytest.raises(DatasetError, match="line 2"):
        load_dataset(csv)


def test_voc_files_naming_the_same_image_are_each_reported(tmp_path):
    for n in ("a", "b", "c"):
        fname = "same.jpg" if n != "c" else "c.jpg"
        (tmp_path / f"{n}.xml").write_text(f"<annotation><filename>{fname}</filename><size><width>64</width>"
                                           "<height>48</height></size></annotation>")
    ds = load_voc(tmp_path)
    assert sorted(ds.images["file_name"]) == ["c.jpg", "same.jpg"]
    [p] = ds.skipped
    assert p.file.endswith("b.xml") and "a.xml names the same image" in p.message


def test_csv_with_a_trailing_comma_on_every_row_loads_and_extra_values_are_named(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,cat,1,2,11,22,\n")
    ds = load_csv(csv)
    assert not ds.skipped and ds.annotations[["x", "y", "w", "h"]].to_numpy().tolist() == [[1, 2, 10, 20]]
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,cat,1,2,11,22,7\n\n"
                   "b.jpg,64,48,cat,1,2\nc.jpg,64,48,cat,1,2,11,22\n")
    ds = load_csv(csv)
    assert list(ds.images["file_name"]) == ["c.jpg"]
    assert [(p.item, p.message) for p in ds.skipped] == [("line 2", "9 fields, the header has 8"),
                                                        ("line 4", "6 fields, the header has 8")]


def test_yolo_export_clips_boxes_and_refuses_one_with_no_area_inside(tmp_path):
    ds = _coco(tmp_path, ["a.jpg"], [(1, [50, 5, 30, 10]), (1, [-4, -4, 10, 10])])
    out = save_yolo(ds, tmp_path / "y", link_images=True)
    back = load_yolo(out)
    assert not back.skipped
    assert np.allclose(np.sort(back.annotations[["x", "y", "w", "h"]].to_numpy(), axis=0),
                       np.sort([[50, 5, 14, 10], [0, 0, 6, 6]], axis=0), atol=1e-6)
    outside = _coco(tmp_path, ["a.jpg"], [(1, [70, 5, 10, 10])])
    with pytest.raises(DatasetError, match=r"annotation 1 \(image 1\).*no area inside the 64x48 image"):
        save_yolo(outside, tmp_path / "y2")
    assert not (tmp_path / "y2").exists()


def test_yolo_export_refuses_a_folder_with_other_images_and_a_missing_image(tmp_path):
    two = _coco(tmp_path, ["a.jpg", "b.jpg"], [(1, [1, 1, 10, 10]), (2, [1, 1, 10, 10])])
    save_yolo(two, tmp_path / "y", link_images=True)
    save_yolo(two, tmp_path / "y", link_images=True)  # the same export again is fine
    with pytest.raises(DatasetError, match="already holds files of other images"):
        save_yolo(two.subset([2]), tmp_path / "y", link_images=True)
    assert len(load_yolo(tmp_path / "y").images) == 2  # untouched
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match="b.jpg: image file not found"):
        save_yolo(two, tmp_path / "fresh", link_images=True)
    assert not (tmp_path / "fresh").exists()


def _png_header(path: Path, w: int, h: int) -> None:
    """A PNG whose header says w x h (no pixel data): enough for a header-only size read."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.parent.mkdir(parents=True, exist_ok=True)
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
                     + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + iend)


def test_size_of_a_very_large_image_is_read_from_its_header(tmp_path):
    from PIL import Image

    _png_header(tmp_path / "big.png", 20000, 20000)  # 400 MP: over PIL's decompression-bomb limit
    assert image_size(tmp_path / "big.png") == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit is back for everyone else


def test_show_draws_a_box_far_outside_the_frame(tmp_path):
    ds = _coco(tmp_path, ["a.jpg"], [(1, [1e12, 10, 1e15, 20]), (1, [5, 5, 20, 20])])
    save_coco(ds, tmp_path / "d.json")
    assert main(["show", str(tmp_path / "d.json"), "--out", str(tmp_path / "g.png")]) == 0
    assert cv2.imread(str(tmp_path / "g.png")) is not None


def test_synth_refuses_negative_counts_before_writing(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--train", "-1", "--test", "2"]) == 2
    assert "train frames -1: must not be negative" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_coco_extra_keys_keep_their_integer_values(tmp_path):
    d = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48, "license": 3},
                    {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
                          "track_id": 7},
                         {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
                          "big": 2 ** 53 + 1, "ratio": 0.5}],
         "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}]}
    (tmp_path / "in.json").write_text(json.dumps(d))
    save_coco(load_coco(tmp_path / "in.json"), tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == d
    assert json.loads((tmp_path / "out.json").read_text())["images"][0]["license"].__class__ is int


def test_an_output_that_is_a_folder_is_named_in_the_error(tmp_path, capsys):
    ds = _coco(tmp_path, ["a.jpg"], [(1, [1, 1, 10, 10])])
    save_coco(ds, tmp_path / "d.json")
    (tmp_path / "odir").mkdir()
    assert main(["convert", str(tmp_path / "d.json"), "--out", str(tmp_path / "odir")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'odir'}:" in err and ".tmp" not in err


def test_qualmet_error_is_the_base_of_dataset_error():  # the CLI's one-line path relies on it
    assert issubclass(DatasetError, QualmetError)


def test_a_yolo_root_with_obj_names_and_labels_below_is_detected(tmp_path):
    root = _yolo_root(tmp_path, "0 0.5 0.5 0.25 0.25\n", "obj.names", "panda\n")
    ds = load_dataset(root)
    assert len(ds.images) == 1 and ds.annotations[["w", "h"]].to_numpy().tolist() == [[16, 12]]


def test_duplicate_class_names_are_refused_both_ways(tmp_path):
    root = _yolo_root(tmp_path, "1 0.5 0.5 0.25 0.25\n", "classes.txt", "cat\ndog\ncat\n")
    with pytest.raises(DatasetError, match="lines 1 and 3 both name 'cat'"):
        load_yolo(root)
    ds = Dataset.from_records([], [], [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat "}], image_root=tmp_path)
    with pytest.raises(DatasetError, match="categories 1 and 2 are both named 'cat'"):
        save_yolo(ds, tmp_path / "out")


def test_sidecar_edges_on_the_command_line(tmp_path, capsys):
    """A noisy copy or a subset written away from its images finds them; --images is taken where a
    data set is read; a sidecar that names a vanished folder, or a folder in its place, is reported."""
    ds = _coco(tmp_path / "pix", ["a.jpg", "b.jpg"], [(1, [1, 1, 10, 10]), (2, [5, 5, 20, 20])])
    bare = tmp_path / "bare" / "t.json"  # the JSON alone, its images elsewhere, no sidecar
    save_coco(ds, bare)
    bare.with_suffix(".images").unlink()
    images = str(tmp_path / "pix" / "images")
    # corrupt --images: the noisy copy's sidecar names the real folder
    assert main(["corrupt", str(bare), "--images", images, "--out", str(tmp_path / "bc" / "n.json"), "--rate", "0.5"]) == 0
    assert load_coco(tmp_path / "bc" / "n.json").image_root == (tmp_path / "pix" / "images").resolve()
    # select takes the image root its metrics run recorded
    assert main(["metrics", "run", str(bare), "--images", images, "--metrics", "brightness,aspect_ratio",
                 "--out", str(tmp_path / "run"), "--workers", "1", "--no-progress"]) == 0
    assert main(["select", str(bare), "--run", str(tmp_path / "run"), "--strategy", "random", "--budget", "1",
                 "--out", str(tmp_path / "sel")]) == 0
    sub = load_coco(tmp_path / "sel" / "subset.json")
    assert sub.image_root == (tmp_path / "pix" / "images").resolve()
    capsys.readouterr()
    # the sidecar's folder gone: one error naming the sidecar and the folder
    deeper = tmp_path / "deep" / "er"  # one level deeper: the relative sidecar misses the images
    deeper.mkdir(parents=True)
    for f in ("n.json", "n.images", "n.manifest.json"):
        (tmp_path / "bc" / f).rename(deeper / f)
    assert main(["validate", str(deeper / "n.json")]) == 2
    err = capsys.readouterr().err
    assert "n.images names the image folder" in err and "does not exist" in err and "pass --images DIR" in err
    # a folder where the sidecar would go: refused before anything is written
    (tmp_path / "coll" / "n.images").mkdir(parents=True)
    assert main(["corrupt", str(bare), "--images", images, "--out", str(tmp_path / "coll" / "n.json")]) == 2
    assert "n.images is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "coll").iterdir()) == ["n.images"]
    # an output named like a sidecar is refused
    assert main(["convert", str(bare), "--images", images, "--out", str(tmp_path / "odd" / "foo.images")]) == 2
    assert "cannot be named *.images" in capsys.readouterr().err


def test_info_names_records_it_could_not_load(tmp_path, capsys):
    d = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64}, {"id": 2, "file_name": "b.jpg", "width": 64,
                                                                     "height": 48}],
         "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "d.json").write_text(json.dumps(d))
    assert main(["info", str(tmp_path / "d.json")]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 1 and "images[0]: image is missing key(s) height" in err


def test_integer_extras_with_gaps_read_as_numbers_and_survive_corrupt(tmp_path):
    ds = _coco(tmp_path, ["a.jpg", "b.jpg"], [(1, [1, 1, 10, 10]), (2, [5, 5, 20, 20]), (2, [30, 5, 20, 20])])
    d = ds.to_coco()
    d["annotations"][0]["occluded"] = 1  # only one annotation has the key
    (tmp_path / "d.json").write_text(json.dumps(d))
    back = load_coco(tmp_path / "d.json")
    col = back.annotations["occluded"]
    assert col.isna().tolist() == [False, True, True]
    assert np.array_equal(col.to_numpy(dtype=float), [1.0, np.nan, np.nan], equal_nan=True)  # what plugins do
    assert main(["corrupt", str(tmp_path / "d.json"), "--out", str(tmp_path / "n" / "noisy.json"), "--types",
                 "missing", "--rate", "1"]) == 0  # the deleted boxes' extras go into the manifest
    from qualmet import manifest, noise

    m = manifest.load_manifest(tmp_path / "n" / "noisy.manifest.json")
    assert noise.restore(load_coco(tmp_path / "n" / "noisy.json"), m).to_coco()["annotations"] == d["annotations"]


def test_a_stale_sidecar_beside_an_images_folder_falls_back_to_it(tmp_path):
    ds = _coco(tmp_path / "exp", ["a.jpg"], [(1, [1, 1, 10, 10])])
    save_coco(ds, tmp_path / "exp" / "train.json")  # beside images/: no sidecar
    (tmp_path / "exp" / "train.images").write_text("/an/old/absolute/place/images\n")  # as old experiments wrote
    assert load_coco(tmp_path / "exp" / "train.json").image_root == (tmp_path / "exp" / "images")


def test_a_second_copy_of_classes_txt_in_labels_is_not_a_label_file(tmp_path):
    root = _yolo_root(tmp_path, "0 0.5 0.5 0.25 0.25\n", "classes.txt", "panda\n")
    (root / "labels" / "classes.txt").write_text("panda\n")
    ds = load_yolo(root)
    assert not ds.skipped and len(ds.images) == 1 and len(ds.annotations) == 1


def test_corrupt_refused_at_its_noisy_target_leaves_the_earlier_pair(tmp_path):
    ds = _coco(tmp_path, ["a.jpg", "b.jpg"], [(1, [1, 1, 10, 10]), (2, [5, 5, 20, 20])])
    save_coco(ds, tmp_path / "d.json")
    out = tmp_path / "n" / "noisy.json"
    assert main(["corrupt", str(tmp_path / "d.json"), "--out", str(out), "--seed", "1"]) == 0
    before = (out.read_bytes(), (tmp_path / "n" / "noisy.manifest.json").read_bytes())
    (tmp_path / "n" / "noisy.images").unlink()  # its sidecar replaced by a folder of that name
    (tmp_path / "n" / "noisy.images").mkdir()
    assert main(["corrupt", str(tmp_path / "d.json"), "--images", str(tmp_path / "images"), "--out", str(out),
                 "--seed", "2"]) == 2
    assert (out.read_bytes(), (tmp_path / "n" / "noisy.manifest.json").read_bytes()) == before
