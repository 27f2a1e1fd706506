"""Bad and odd inputs (tests/data/make_bad_corpus.py): each is reported precisely or decoded in a defined way,
unsafe file names are refused without being opened, and a metrics run over all of them completes."""
from __future__ import annotations

import builtins
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qualmet
from qualmet.errors import DatasetError, ImageError, PathSafetyError
from qualmet.formats import load_coco, load_dataset, load_yolo, save_coco, save_yolo
from qualmet.imageio import image_size, read_image
from qualmet.runner import run_metrics
from qualmet.validate import validate

from .data.make_bad_corpus import (IMAGES, ODD_NAMES, RECORD_CASES, UNREADABLE, UNSAFE, VALIDATE_CASES, YOLO_CASES,
                                   make_corpus)

IDS = {k: n for n, k in enumerate(IMAGES, start=1)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("bad"))


def _find(problems, item: str, words: str, severity: str = "error"):
    hits = [p for p in problems if p.item == item and words in p.message and p.severity == severity]
    assert hits, f"no {severity} for {item!r} with {words!r}; got:\n" + "\n".join(map(str, problems))
    return hits


def test_corpus_is_deterministic(tmp_path):
    a, b = make_corpus(tmp_path / "a"), make_corpus(tmp_path / "b")
    for k in ("coco", "coco_records", "ok", "truncated_jpeg", "exif_jpeg", "gray16_png"):
        assert a[k].read_bytes() == b[k].read_bytes(), k


# -- images -------------------------------------------------------------------------------------

def test_odd_images_decode_to_rgb_uint8(corpus):
    gray = read_image(corpus["gray_png"])
    assert gray.shape == (30, 40, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    # 16-bit gray (8-bit value v stored as v * 257) scales back to the same 8-bit picture
    g16 = read_image(corpus["gray16_png"])
    assert g16.dtype == np.uint8 and g16.shape == (30, 40, 3)
    assert np.abs(g16.astype(int) - gray.astype(int)).max() <= 1
    # alpha is dropped, not blended: colours equal the RGB planes of the (almost transparent) file
    from PIL import Image

    rgba = read_image(corpus["rgba_png"])
    with Image.open(corpus["rgba_png"]) as im:
        assert im.mode == "RGBA"
        ref = np.asarray(im)[..., :3]
    assert rgba.shape == (30, 40, 3) and (rgba == ref).all()
    pal = read_image(corpus["palette_png"])
    with Image.open(corpus["palette_png"]) as im:
        assert im.mode == "P"
        ref = np.asarray(im.convert("RGB"))
    assert pal.shape == (30, 40, 3) and (pal == ref).all()
    assert read_image(corpus["one_pixel"]).tolist() == [[[200, 100, 50]]]
    assert read_image(corpus["wide"]).shape == (3, 4000, 3)


@pytest.mark.parametrize("key", ["ok", "truncated_jpeg", "gray_png", "rgba_png", "gray16_png", "palette_png",
                                 "one_pixel", "wide", "exif_jpeg", "colour_jpeg"])
def test_direct_rgb_decode_equals_bgr_decode_then_swap(corpus, key, monkeypatch, tmp_path):
    """read_image decodes straight to RGB where OpenCV can; the pixels equal the older path (BGR, then
    swapped), which is still used where the flag is missing."""
    import cv2

    from qualmet import imageio

    if key == "colour_jpeg":  # a photo-like colour JPEG (4:2:0 chroma, as cameras write)
        rng = np.random.default_rng(3)
        img = cv2.GaussianBlur(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), (5, 5), 0)
        path = tmp_path / "colour.jpg"
        path.write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
    else:
        path = corpus[key]
    direct = read_image(path)
    monkeypatch.setattr(imageio, "_RGB_FLAG", None)
    swapped = read_image(path)
    assert direct.dtype == swapped.dtype == np.uint8 and direct.shape == swapped.shape
    assert np.array_equal(direct, swapped), key
    if key == "colour_jpeg":  # RGB order: the red plane is OpenCV's third (BGR) plane
        assert np.array_equal(direct[..., 0], cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[..., 2])


def test_exif_orientation_is_honoured_and_matches_image_size(corpus):
    from PIL import Image

    with Image.open(corpus["exif_jpeg"]) as im:
        assert im.size == (60, 40) and im.getexif()[0x0112] == 6  # stored landscape, displayed portrait
        shown = np.asarray(im.transpose(Image.Transpose.ROTATE_270).convert("RGB")).astype(int)
    img = read_image(corpus["exif_jpeg"])
    assert img.shape == (60, 40, 3)
    assert (img.shape[1], img.shape[0]) == image_size(corpus["exif_jpeg"]) == (40, 60)
    assert np.abs(img.astype(int) - shown).mean() < 8  # rotated the right way (both decoders, same pixels)


def test_truncated_jpeg_decodes_and_validate_warns(corpus):
    img = read_image(corpus["truncated_jpeg"])
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    ds = load_coco(corpus["coco"], on_invalid="skip")
    _find(validate(ds), f"image {IDS['truncated_jpeg']} (truncated.jpg)", "no end-of-image marker", "warning")


@pytest.mark.parametrize("key,words", [("empty_jpeg", "empty (0 bytes)"), ("text_jpeg", "not a decodable image")])
def test_undecodable_files_raise_image_error_naming_the_file(corpus, key, words):
    with pytest.raises(ImageError) as e:
        read_image(corpus[key])
    assert words in str(e.value)
    assert IMAGES[key][0] in str(e.value)


def test_validate_names_every_bad_image(corpus):
    ds = load_coco(corpus["coco"], on_invalid="skip")
    problems = validate(ds)
    for k in ("empty_jpeg", "text_jpeg", "missing"):
        hits = _find(problems, f"image {IDS[k]} ({IMAGES[k][0]})", "")
        assert hits[0].file.endswith(IMAGES[k][0])
    for k in UNSAFE:
        _find(problems, f"image {IDS[k]} ({IMAGES[k][0]})", "absolute path" if k == "absolute" else "outside the image root")
    # the odd but valid images give no error at all (EXIF size recorded after rotation)
    fine = [k for k in IMAGES if k not in UNREADABLE]
    bad_items = {p.item for p in problems if p.severity == "error"}
    assert not bad_items & {f"image {IDS[k]} ({IMAGES[k][0]})" for k in fine}
    # recording the stored (unrotated) size of the EXIF image is reported as a size mismatch
    ds.images.loc[ds.images["id"] == IDS["exif_jpeg"], ["width", "height"]] = [60, 40]
    _find(validate(ds), f"image {IDS['exif_jpeg']} (exif6.jpg)", "recorded size 60x40 disagrees with the image file's 40x60")


# -- path safety --------------------------------------------------------------------------------

def test_unsafe_names_are_refused_and_never_opened(corpus, monkeypatch):
    ds = load_coco(corpus["coco"], on_invalid="skip")
    for k in UNSAFE:
        with pytest.raises(PathSafetyError):
            ds.image_path(IMAGES[k][0])
    opened: list[str] = []
    real_open, real_fromfile = builtins.open, np.fromfile

    def rec_open(f, *a, **kw):
        if isinstance(f, (str, os.PathLike)):
            opened.append(os.path.realpath(f))
        return real_open(f, *a, **kw)

    def rec_fromfile(f, *a, **kw):
        opened.append(os.path.realpath(f))
        return real_fromfile(f, *a, **kw)

    monkeypatch.setattr(builtins, "open", rec_open)
    monkeypatch.setattr(np, "fromfile", rec_fromfile)
    validate(ds)  # decodes every safe image
    run_metrics(ds, metrics=["brightness", "sharpness"], workers=1, progress=False, entry_points=False)
    root = os.path.realpath(corpus["images"])
    secret = os.path.realpath(corpus["outside_secret"])
    assert secret not in opened and "/etc/hostname" not in opened
    image_reads = [p for p in opened if Path(p).suffix in (".png", ".jpg") or p.startswith("/etc")]
    assert image_reads and all(p.startswith(root + os.sep) for p in image_reads), image_reads


@pytest.mark.parametrize("name", ["/etc/hostname", "//host/share/a.jpg", "\\\\host\\share\\a.jpg",
                                  "C:\\a.jpg", "C:a.jpg", "c:/a.jpg", "a:b.jpg"])
def test_safe_join_refuses_absolute_and_drive_names(tmp_path, name):
    from qualmet.paths import safe_join

    for cache in (None, {}):
        with pytest.raises(PathSafetyError, match="absolute path"):
            safe_join(tmp_path, name, cache=cache)


def test_safe_join_with_folder_cache_agrees_with_the_full_check(tmp_path):
    from qualmet.paths import safe_join

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    (root / "a" / "b" / "ok.jpg").write_bytes(b"x")
    (root / "a" / "link_out.jpg").symlink_to(outside / "secret.jpg")
    (root / "a" / "link_in.jpg").symlink_to(root / "a" / "b" / "ok.jpg")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "dir_in").symlink_to(root / "a", target_is_directory=True)
    names = ["a/b/ok.jpg", "a/link_in.jpg", "dir_in/b/ok.jpg", "a/./b/ok.jpg", "a//b/ok.jpg", "not_there.jpg",
             "a/link_out.jpg", "dir_out/secret.jpg", "a/../../outside/secret.jpg", "a/b/../../dir_out/secret.jpg"]
    cache: dict = {}
    for _ in range(2):  # the second pass answers from the cache
        for name in names:
            try:
                want = safe_join(root, name)
            except PathSafetyError:
                with pytest.raises(PathSafetyError, match="resolves outside"):
                    safe_join(root, name, cache=cache)
                continue
            assert safe_join(root, name, cache=cache) == want, name
    assert any(isinstance(k, tuple) and k[1] == "dir_in/b" for k in cache)  # folders were cached


@pytest.mark.parametrize("h,w,s", [(480, 640, 2), (481, 641, 3), (7, 5, 4), (1000, 1500, 5), (2, 3, 1)])
def test_context_small_is_exactly_every_kth_pixel(h, w, s):
    from qualmet.context import _subsample

    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = _subsample(img, s)
    assert out.flags.c_contiguous and np.array_equal(out, img[::s, ::s])


# -- data set files -----------------------------------------------------------------------------

@pytest.mark.parametrize("key,words", [("coco_truncated", "malformed JSON"), ("coco_syntax", "line 1 column 45")])
def test_broken_json_is_one_dataset_error_with_position(corpus, key, words):
    with pytest.raises(DatasetError, match=words) as e:
        load_coco(corpus[key])
    assert str(corpus[key]) in str(e.value)


def test_every_bad_coco_record_is_reported_by_item(corpus):
    with pytest.raises(DatasetError, match=f"{len(RECORD_CASES)} record") as e:
        load_coco(corpus["coco_records"])
    assert len(e.value.problems) == len(RECORD_CASES)
    ds = load_coco(corpus["coco_records"], on_invalid="skip")
    problems = validate(ds, check_images=False)
    for item, words in RECORD_CASES:
        _find(problems, item, words)
    for sev, item, words in VALIDATE_CASES:
        _find(problems, item, words, sev)
    assert all(p.file == str(corpus["coco_records"]) for p in problems)
    # what loaded: images 1 and 2 (2 has no annotations), boxes 1, 2, 4, 5 on image 1, category 1
    assert sorted(ds.images["id"]) == [1, 2]
    assert sorted(ds.annotations["id"]) == [1, 2, 4, 5]
    assert ds.category_names == {1: "thing"}
    assert ds.summary()["images_without_boxes"] == 1


def test_voc_missing_bndbox_and_broken_xml(corpus):
    ds = load_dataset(corpus["voc"], on_invalid="skip")
    v1 = str(corpus["voc"] / "v1.xml")
    assert [p.file for p in _find(ds.skipped, "v1.png object 1 (ghost)", "no <bndbox>")] == [v1]
    _find(ds.skipped, "v1.png object 2 (half)", "needs numeric xmin, ymin, xmax, ymax")
    [bad] = _find(ds.skipped, "line 1", "malformed XML")
    assert bad.file.endswith("v2.xml")
    assert ds.annotations[["x", "y", "w", "h"]].values.tolist() == [[1, 2, 10, 10]]
    with pytest.raises(DatasetError, match="3 item"):
        load_dataset(corpus["voc"])


def test_yolo_bad_lines_named(corpus):
    ds = load_yolo(corpus["yolo_labels"], images=corpus["yolo_images"])
    for item, words in YOLO_CASES:
        [p] = _find(ds.skipped, item, words)
        assert p.file.endswith("y1.txt")
    assert len(ds.skipped) == len(YOLO_CASES) and len(ds.annotations) == 1


# -- odd class names round-trip ---------------------------------------------------------------

def test_odd_class_names_round_trip_coco_and_yolo(corpus, tmp_path):
    ds = load_coco(corpus["coco"], on_invalid="skip")
    assert list(ds.categories["name"]) == ODD_NAMES
    save_coco(ds, tmp_path / "c.json")
    back = load_coco(tmp_path / "c.json", images=corpus["images"])
    assert list(back.categories["name"]) == ODD_NAMES
    pd.testing.assert_frame_equal(back.annotations, ds.annotations)

    # YOLO: one name per line, surrounding spaces stripped on loading (documented)
    sub = ds.subset([IDS["ok"], IDS["gray_png"], IDS["palette_png"]])
    save_yolo(sub, tmp_path / "y")
    y = load_yolo(tmp_path / "y" / "labels", images=corpus["images"])
    assert list(y.categories["name"]) == [n.strip() for n in ODD_NAMES]
    got = y.annotations.merge(y.images, left_on="image_id", right_on="id")
    want = sub.annotations.merge(sub.images, left_on="image_id", right_on="id")
    names = sub.category_names
    assert sorted(zip(got["file_name"], got["category_id"].map(y.category_names))) == \
        sorted(zip(want["file_name"], want["category_id"].map(lambda c: names[c].strip())))
    np.testing.assert_allclose(got.sort_values("file_name")[["x", "y", "w", "h"]].to_numpy(),
                               want.sort_values("file_name")[["x", "y", "w", "h"]].to_numpy(), atol=1e-6)


def test_yolo_export_refuses_a_name_with_a_line_break(corpus, tmp_path):
    ds = load_coco(corpus["coco"], on_invalid="skip")
    ds.categories.loc[0, "name"] = "two\nlines"
    with pytest.raises(DatasetError, match="line break"):
        save_yolo(ds, tmp_path / "y")


# -- a metrics run over everything -------------------------------------------------------------

def test_run_metrics_over_the_corpus_completes_and_accounts_for_every_image(corpus, tmp_path):
    out = tmp_path / "run"
    run = run_metrics(corpus["coco"], out=out, workers=1, progress=False)
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    frames = pd.read_parquet(out / "frames.parquet")
    objects = pd.read_parquet(out / "objects.parquet")
    assert info["skipped_frames"] == run.skipped_frames and run.exit_code == 1
    assert info["errors"] == [], info["errors"]  # odd images are data, not metric crashes
    skipped = {s["image_id"]: s["reason"] for s in info["skipped_frames"]}
    assert set(skipped) == {IDS[k] for k in UNREADABLE}
    for k in UNREADABLE:
        assert IMAGES[k][0] in skipped[IDS[k]] or k == "absolute" and "absolute path" in skipped[IDS[k]]
    assert sorted(frames["image_id"]) == sorted(IDS.values())  # every image is a row
    assert info["dataset"]["images"] + len(info["dataset"]["skipped_items"]) == len(IMAGES)
    pixel = [m["name"] for m in info["metrics"] if "pixels" in m["needs"]]
    fpix = [c for c in pixel if c in frames]
    opix = [c for c in pixel if c in objects]
    assert fpix and opix
    for df in (frames, objects):
        vals = df.select_dtypes("number").to_numpy(dtype=float)
        assert not np.isinf(vals).any()
    bad = frames["image_id"].isin(list(skipped))
    assert frames.loc[bad, fpix].isna().all().all()  # skipped: no pixel values
    assert frames.loc[~bad, fpix].notna().all().all()  # everything else: computed
    assert objects.loc[objects["image_id"].isin(list(skipped)), opix].isna().all().all()
    # label-only metrics are computed even for skipped frames
    label = [m["name"] for m in info["metrics"] if not m["needs"] and m["level"] == "frame"]
    assert label and frames[label].notna().all().all()
    assert math.isclose(frames.loc[frames["image_id"] == IDS["exif_jpeg"], "height"].item(), 60)


def test_run_metrics_on_bad_records_lists_them(corpus, tmp_path):
    run = run_metrics(corpus["coco_records"], out=tmp_path / "r", workers=1, progress=False, metrics=["brightness", "aspect_ratio"])
    items = {(p["item"], p["message"].split(";")[0][:20]) for p in run.info["dataset"]["skipped_items"]}
    assert len(run.info["dataset"]["skipped_items"]) == len(RECORD_CASES) and len(items) >= len(RECORD_CASES) - 1
    assert {s["image_id"] for s in run.skipped_frames} == {1, 2}  # a.png, b.png are not on disk
    assert len(run.objects) == 4 and not np.isinf(run.objects["aspect_ratio"].to_numpy(dtype=float)).any()


def test_qualmet_exports_used():  # the names the tests rely on are public
    assert qualmet.DatasetError is DatasetError
