"""Validation names the culprit of every deliberately broken fixture, all at once."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import qualmet
from qualmet.formats import load_voc, load_yolo
from qualmet.validate import validate

from .conftest import make_coco


def _write_images(folder, coco, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    for im in coco["images"]:
        if im["file_name"] not in skip and "height" in im:
            cv2.imwrite(str(folder / im["file_name"]), np.full((im["height"], im["width"], 3), 120, np.uint8))


def _messages(problems):
    return [str(p) for p in problems]


def test_valid_data_set_has_no_problems(tmp_path):
    d = make_coco()
    _write_images(tmp_path / "images", d)
    (tmp_path / "d.json").write_text(json.dumps(d))
    assert validate(qualmet.load_coco(tmp_path / "d.json")) == []


def test_every_record_problem_is_reported_at_once_with_its_culprit(tmp_path):
    d = make_coco(n_images=3)
    d["images"].append({"id": "7", "file_name": "s.png", "width": 5, "height": 5})           # string id
    d["images"].append({"id": 8, "file_name": "m.png", "width": 5})                         # missing key
    d["images"].append({"id": 1, "file_name": "dup.png", "width": 5, "height": 5})          # duplicate id
    d["annotations"] += [
        {"id": 100, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},                 # unknown category
        {"id": 101, "image_id": 42, "category_id": 1, "bbox": [1, 1, 2, 2]},                # missing image
        {"id": 102, "image_id": 1, "category_id": 1, "bbox": [1, float("nan"), 2, 2]},      # NaN
        {"id": 103, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]},                    # 3 numbers
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},                   # duplicate id
        {"id": 104, "image_id": 2, "category_id": 1, "bbox": [5, 5, -3, 4]},                # negative size
        {"id": 105, "image_id": 2, "category_id": 1, "bbox": [500, 500, 4, 4]},             # entirely outside
        {"id": 106, "image_id": 3, "category_id": 1, "bbox": [60, 40, 20, 20]},             # sticks out
        {"image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]},                            # no id
    ]
    _write_images(tmp_path / "images", d, skip=("img3.png",))
    (tmp_path / "images" / "img2.png").unlink()
    cv2.imwrite(str(tmp_path / "images" / "img2.png"), np.zeros((10, 10, 3), np.uint8))      # wrong size
    (tmp_path / "images" / "img3.png").write_text("not an image")                            # undecodable
    (tmp_path / "d.json").write_text(json.dumps(d))
    with pytest.raises(qualmet.DatasetError, match="cannot be loaded"):
        qualmet.load_coco(tmp_path / "d.json")
    ds = qualmet.load_coco(tmp_path / "d.json", on_invalid="skip")
    msgs = "\n".join(_messages(validate(ds)))
    expected = [
        r"images\[3\]: image id must be an integer, got str '7'",
        r"images\[4\]: image is missing key\(s\) height",
        r"image 1 \(dup.png\): duplicate image id",
        r"annotation 100 \(image 1\): unknown category_id 9",
        r"annotation 101 \(image 42\): image_id 42 is not a loaded image",
        r"annotation 102 \(image 1\): bbox has a NaN",
        r"annotation 103 \(image 1\): bbox must be a list of 4 numbers",
        r"annotation 1 \(image 1\): duplicate annotation id",
        r"annotation 104 \(image 2 \(img2.png\)\): box has non-positive size: w=-3",
        r"annotation 105 \(image 2 \(img2.png\)\): box \[500, 500, 4, 4\] lies entirely outside the 64x48 image",
        r"warning: .*annotation 106 \(image 3 \(img3.png\)\): .*sticks out of the 64x48 image by up to 16.0 px",
        r"annotations\[\d+\]: annotation is missing key\(s\) id",
        r"image 2 \(img2.png\): recorded size 64x48 disagrees with the image file's 10x10",
        r"img3.png: image 3 \(img3.png\): .*not a decodable image",
    ]
    import re

    for pat in expected:
        assert re.search(pat, msgs), f"missing: {pat}\n--- got:\n{msgs}"
    # loading never drops silently: every record is either loaded or listed
    assert len(ds.annotations) + sum("annotation" in p.item for p in ds.skipped) == len(d["annotations"])


def test_missing_image_and_unsafe_file_names_are_refused(tmp_path):
    d = make_coco(n_images=3)
    d["images"][1]["file_name"] = "../../etc/passwd"
    d["images"][2]["file_name"] = "/etc/passwd"
    (tmp_path / "images").mkdir()
    (tmp_path / "d.json").write_text(json.dumps(d))
    msgs = "\n".join(_messages(validate(qualmet.load_coco(tmp_path / "d.json"))))
    assert "image 1 (img1.png): " in msgs and "image file not found" in msgs
    missing = next(m for m in msgs.splitlines() if "image file not found" in m)
    assert missing.count("img1.png") == 2  # the path once and the item once, not the path again in the message
    assert "'../../etc/passwd' resolves outside the image root" in msgs
    assert "'/etc/passwd' is an absolute path" in msgs


def test_empty_data_set_is_a_warning(tmp_path):
    d = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "panda"}]}
    (tmp_path / "e.json").write_text(json.dumps(d))
    probs = validate(qualmet.load_coco(tmp_path / "e.json"))
    assert [(p.severity, p.message) for p in probs] == [("warning", "the data set has no images")]


def test_malformed_json_and_xml_report_line_numbers(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [\n  {"id": 1,\n  }\n]}')
    with pytest.raises(qualmet.DatasetError, match=r"bad.json: line 3 column 3: malformed JSON"):
        qualmet.load_coco(tmp_path / "bad.json")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text("<annotation>\n<filename>a.jpg</filename>\n<size><width>10</width>\n</annotation>")
    (voc / "b.xml").write_text("<annotation><filename>b.jpg</filename><size><width>10</width><height>8</height></size>"
                               "<object><name>x</name></object>"
                               "<object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                               "</annotation>")
    ds = load_voc(voc)
    msgs = "\n".join(_messages(ds.skipped))
    assert "a.xml: line 4: malformed XML" in msgs
    assert "b.xml: b.jpg object 0 (x): object has no <bndbox>" in msgs
    assert len(ds.annotations) == 1


def test_yolo_bad_lines_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f.png"), np.zeros((20, 40, 3), np.uint8))
    lab = tmp_path / "labels"
    lab.mkdir()
    (lab / "classes.txt").write_text("panda\n")
    (lab / "f.txt").write_text("0 0.5 0.5 0.2\n0 0.5 0.5 0.2 0.2 1.9\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5 0.25 0.5\n")
    ds = load_yolo(lab, images=tmp_path / "images")
    msgs = "\n".join(_messages(ds.skipped))
    assert "f.txt: line 1: expected 5 fields 'class cx cy w h', got 4" in msgs
    assert "f.txt: line 2: confidence must lie in [0, 1], got 1.9" in msgs  # 6 fields: a box and a confidence
    assert "f.txt: line 3: normalised values must lie in [0, 1]" in msgs
    np.testing.assert_allclose(ds.boxes(), [[15, 5, 10, 10]])


def test_cli_errors_are_one_line_and_exit_codes_say_what_happened(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    r = subprocess.run([sys.executable, "-m", "qualmet", "validate", str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bad.json: line 1 column 2: malformed JSON" in r.stderr
    assert "Traceback" not in r.stderr
    d = make_coco()
    d["annotations"][0]["bbox"] = [1, 1, 0, 5]
    _write_images(tmp_path / "images", d)
    (tmp_path / "d.json").write_text(json.dumps(d))
    r = subprocess.run([sys.executable, "-m", "qualmet", "validate", str(tmp_path / "d.json")], capture_output=True, text=True)
    assert r.returncode == 1 and "annotation 1" in r.stdout and "1 error(s)" in r.stdout
    d["annotations"][0]["bbox"] = [1, 1, 3, 5]
    (tmp_path / "d.json").write_text(json.dumps(d))
    r = subprocess.run([sys.executable, "-m", "qualmet", "validate", str(tmp_path / "d.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_command_has_help():
    from qualmet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"validate", "convert", "info"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: qualmet " + name)


def test_yolo_label_file_that_is_not_utf8_is_reported_not_a_crash(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f.png"), np.zeros((20, 40, 3), np.uint8))
    lab = tmp_path / "labels"
    lab.mkdir()
    (lab / "classes.txt").write_text("panda\n")
    (lab / "f.txt").write_bytes(b"0 0.5 \xff\xfe 0.2 0.2\n")
    ds = load_yolo(lab, images=tmp_path / "images")
    assert any("f.txt" in p.file and "not UTF-8" in p.message for p in ds.skipped)


def test_records_naming_one_file_by_other_spellings_or_links_are_errors(tmp_path):
    """./a.jpg, sub/../a.jpg and a link to a.jpg inside the image folder passed with 0 errors."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "sub").mkdir()
    cv2.imwrite(str(root / "a.png"), np.full((10, 12, 3), 90, np.uint8))
    (root / "alias.png").symlink_to(root / "a.png")
    names = ["a.png", "./a.png", "sub/../a.png", "alias.png"]
    coco = {"images": [{"id": i + 1, "file_name": n, "width": 12, "height": 10} for i, n in enumerate(names)],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "d.json").write_text(json.dumps(coco))
    found = [m for m in _messages(validate(qualmet.load_coco(tmp_path / "d.json"))) if "names the same file" in m]
    assert len(found) == 3 and all("as image 1 (a.png)" in m for m in found)


def test_categories_sharing_a_name_are_a_warning_and_info_keeps_every_category(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
            "annotations": [{"id": k, "image_id": 1, "category_id": c, "bbox": [1, 1, 3, 3]} for k, c in ((1, 1), (2, 2), (3, 2))],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "dog"}]}
    (tmp_path / "d.json").write_text(json.dumps(coco))
    ds = qualmet.load_coco(tmp_path / "d.json")
    assert ds.summary()["categories"] == {"cat (id 1)": 1, "cat (id 2)": 2, "dog": 0}  # was {"cat": 3}
    msgs = _messages(validate(ds, check_images=False))
    assert any("categories 1, 2" in m and "2 categories share the name 'cat'" in m for m in msgs)


def test_a_complete_jpeg_with_bytes_after_its_end_is_not_truncated(tmp_path):
    from qualmet.imageio import truncated_jpeg

    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    data = buf.tobytes()
    (tmp_path / "whole.jpg").write_bytes(data)
    (tmp_path / "trailer.jpg").write_bytes(data + b"SAMSUNG" + bytes(200))  # some phones append data
    (tmp_path / "short.jpg").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "short_ending_in_ffd9.jpg").write_bytes(data[: len(data) // 2] + b"\xff\x00" * 3)
    assert [truncated_jpeg((tmp_path / f).read_bytes()) for f in ("whole.jpg", "trailer.jpg", "short.jpg", "short_ending_in_ffd9.jpg")] \
        == [False, False, True, True]


def test_validate_json_prints_only_json_lines_on_stdout(tmp_path):
    d = make_coco()
    _write_images(tmp_path / "images", d)
    d["annotations"][0]["bbox"] = [0, 0, -1, 3]
    (tmp_path / "d.json").write_text(json.dumps(d))
    r = subprocess.run([sys.executable, "-m", "qualmet", "validate", str(tmp_path / "d.json"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout.strip()
    assert all(isinstance(json.loads(line), dict) for line in r.stdout.splitlines())
    assert "1 error(s)" in r.stderr
