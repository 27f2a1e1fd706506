"""A small, deterministic corpus of bad and odd inputs, written on demand (nothing binary is committed).

``make_corpus(out_dir)`` writes images, COCO / VOC / YOLO files and a symlink under ``out_dir`` and
returns a name -> path map. Run as a script to write one into a folder: ``python make_bad_corpus.py DIR``.

Size convention for the EXIF-rotated JPEG: the COCO record holds the size *after* EXIF orientation
(what a person sees in a viewer and what ``qualmet.imageio.image_size`` / ``read_image`` give), so
the 60x40 stored pixels with orientation 6 are recorded as width 40, height 60.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# class names with unicode, commas, quotes, a backslash, spaces and a semicolon
ODD_NAMES = ["panda", "ours brun, grand", 'say "cheese"', "l'été 🐼", "back\\slash; tab\tx", "  padded  "]

# images referenced by the main COCO file: key -> (file_name, recorded width, recorded height)
IMAGES = {
    "ok": ("ok.png", 48, 32),
    "truncated_jpeg": ("truncated.jpg", 64, 48),
    "empty_jpeg": ("empty.jpg", 64, 48),
    "text_jpeg": ("text.jpg", 64, 48),
    "gray_png": ("gray.png", 40, 30),
    "rgba_png": ("rgba.png", 40, 30),
    "gray16_png": ("gray16.png", 40, 30),
    "palette_png": ("palette.png", 40, 30),
    "one_pixel": ("one.png", 1, 1),
    "wide": ("wide.png", 4000, 3),
    "exif_jpeg": ("exif6.jpg", 40, 60),  # stored 60x40, orientation 6: recorded after rotation
    "symlink_out": ("link_out.png", 16, 16),
    "dotdot": ("../outside/secret.png", 16, 16),
    "dotdot_nested": ("sub/../../outside/secret.png", 16, 16),
    "absolute": ("/etc/hostname", 16, 16),
    "missing": ("no_such_file.png", 20, 20),
}
# images that cannot give pixels (undecodable, unsafe or missing); all others decode
UNREADABLE = {"empty_jpeg", "text_jpeg", "symlink_out", "dotdot", "dotdot_nested", "absolute", "missing"}
UNSAFE = {"symlink_out", "dotdot", "dotdot_nested", "absolute"}


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (230, 230, 230)  # a bright object for the box metrics
    return img


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _write_images(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    p = {k: d / IMAGES[k][0] for k in IMAGES if k not in UNSAFE and k != "missing"}
    Image.fromarray(_noise(32, 48, 1)).save(p["ok"])
    full = _jpeg_bytes(Image.fromarray(_noise(48, 64, 2)))
    p["truncated_jpeg"].write_bytes(full[: len(full) // 2])  # no end-of-image marker
    p["empty_jpeg"].write_bytes(b"")
    p["text_jpeg"].write_text("this is a text file, not a JPEG\n", encoding="utf-8")
    gray = _noise(30, 40, 3)[..., 0]
    Image.fromarray(gray).save(p["gray_png"])
    rgba = np.dstack([_noise(30, 40, 4), np.full((30, 40), 7, np.uint8)])  # almost transparent
    Image.fromarray(rgba).save(p["rgba_png"])
    g16 = (gray.astype(np.uint16) * 257)  # full 16-bit range: 8-bit value v -> v * 257
    Image.fromarray(g16).save(p["gray16_png"])
    Image.fromarray(_noise(30, 40, 5)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(p["palette_png"])
    Image.fromarray(np.array([[[200, 100, 50]]], np.uint8)).save(p["one_pixel"])
    Image.fromarray(_noise(3, 4000, 6)).save(p["wide"])
    stored = Image.fromarray(_noise(40, 60, 7))  # 60 wide, 40 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p["exif_jpeg"].write_bytes(_jpeg_bytes(stored, exif=exif.tobytes()))
    return p


def _box(k: str) -> list[float]:
    w, h = IMAGES[k][1], IMAGES[k][2]
    if w < 4 or h < 4:
        return [0.0, 0.0, float(w), float(h)]
    return [w / 4, h / 4, w / 2, h / 2]


def make_corpus(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the bad-input corpus under ``out_dir``; returns names -> paths (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"root": out}
    img_dir = out / "images"
    paths.update(_write_images(img_dir))
    paths["images"] = img_dir
    outside = out / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.png"
    Image.fromarray(_noise(16, 16, 8)).save(secret)
    paths["outside_secret"] = secret
    link = img_dir / IMAGES["symlink_out"][0]
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(secret, img_dir), link)
    paths["symlink_out"] = link

    cats = [{"id": i + 1, "name": n, "supercategory": "odd"} for i, n in enumerate(ODD_NAMES)]
    images, anns = [], []
    for n, (k, (fname, w, h)) in enumerate(IMAGES.items(), start=1):
        images.append({"id": n, "file_name": fname, "width": w, "height": h})
        b = _box(k)
        anns.append({"id": n, "image_id": n, "category_id": 1 + n % len(ODD_NAMES), "bbox": b,
                     "area": b[2] * b[3], "iscrowd": 0})
    coco = {"info": {"description": "qualmet bad-input corpus"}, "images": images, "annotations": anns,
            "categories": cats}
    paths["coco"] = out / "corpus.json"
    paths["coco"].write_text(json.dumps(coco, ensure_ascii=False, indent=1), encoding="utf-8")

    text = json.dumps(coco)
    paths["coco_truncated"] = out / "truncated.json"
    paths["coco_truncated"].write_text(text[: len(text) // 2], encoding="utf-8")
    paths["coco_syntax"] = out / "syntax.json"
    paths["coco_syntax"].write_text('{"images": [{"id": 1, "file_name": "ok.png",}], "annotations": [}\n', encoding="utf-8")
    paths["coco_records"] = out / "records.json"
    paths["coco_records"].write_text(_records_json(), encoding="utf-8")

    paths.update(_write_voc(out / "voc"))
    paths.update(_write_yolo(out / "yolo"))
    return paths


def _records_json() -> str:
    """COCO whose records are each wrong in one way; RECORD_CASES names what each should give."""
    images = [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},   # fine, holds the box cases
        {"id": 2, "file_name": "b.png", "width": 100, "height": 80},   # fine, no annotations
        {"file_name": "c.png", "width": 100, "height": 80},            # images[2]: missing id
        {"id": "4", "file_name": "d.png", "width": 100, "height": 80},  # images[3]: string id
        {"id": 5, "file_name": "e.png", "width": "100", "height": 80},  # image 5: width is a string
        {"id": 6, "file_name": 6, "width": 100, "height": 80},          # image 6: file_name not a string
        {"id": 1, "file_name": "dup.png", "width": 100, "height": 80},  # image 1 (dup.png): duplicate id
        [1, 2, 3],                                                      # images[7]: not an object
        {"id": 9, "file_name": "neg.png", "width": -5, "height": 80},   # image 9: negative width
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},        # fine
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, -5, 20]},        # negative w (validate)
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, float("nan"), 5, 5]},  # NaN (load)
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [500, 500, 10, 10]},      # outside (validate)
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [90, 70, 30, 30]},        # sticks out (warning)
        {"id": 6, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},           # unknown category
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},            # duplicate id
        {"id": 8, "image_id": 42, "category_id": 1, "bbox": [1, 1, 5, 5]},           # missing image
        {"id": 9, "image_id": 1, "category_id": 1},                                  # missing bbox
        {"id": "10", "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},         # string id
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]},              # 3 numbers
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": ["1", 1, 5, 5]},         # string coordinate
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, float("inf")]},  # infinite
        {"id": 14, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": "high"},  # bad score
    ]
    cats = [{"id": 1, "name": "thing"}, {"id": "2", "name": "string id"}, {"id": 3}, {"id": 1, "name": "dup"}]
    return json.dumps({"images": images, "annotations": anns, "categories": cats})


# (item, words in the message) that loading records.json must report, one entry per bad record
RECORD_CASES = [
    ("images[2]", "missing key(s) id"),
    ("images[3]", "image id must be an integer"),
    ("image 5 (e.png)", "width and height must be positive integers"),
    ("image 6 (6)", "file_name must be a non-empty string"),
    ("image 1 (dup.png)", "duplicate image id"),
    ("images[7]", "an image must be an object"),
    ("image 9 (neg.png)", "width and height must be positive integers"),
    ("annotation 3 (image 1)", "NaN, infinite"),
    ("annotation 6 (image 1)", "unknown category_id 99"),
    ("annotation 1 (image 1)", "duplicate annotation id"),
    ("annotation 8 (image 42)", "image_id 42 is not a loaded image"),
    ("annotations[8]", "missing key(s) bbox"),
    ("annotations[9]", "id must be an integer"),
    ("annotation 11 (image 1)", "bbox must be a list of 4 numbers"),
    ("annotation 12 (image 1)", "bbox must be a list of 4 numbers"),
    ("annotation 13 (image 1)", "NaN, infinite"),
    ("annotation 14 (image 1)", "score must be a finite number"),
    ("categories[1]", "integer 'id' and a string 'name'"),
    ("categories[2]", "integer 'id' and a string 'name'"),
    ("category 1", "duplicate category id"),
]
# found by validate() on the loaded records.json (image files are absent: check_images=False)
VALIDATE_CASES = [
    ("error", "annotation 2 (image 1 (a.png))", "non-positive size"),
    ("error", "annotation 4 (image 1 (a.png))", "entirely outside"),
    ("warning", "annotation 5 (image 1 (a.png))", "sticks out"),
]


def _write_voc(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    obj_ok = "<object><name>panda</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>12</ymax></bndbox></object>"
    obj_nobox = "<object><name>ghost</name><difficult>0</difficult></object>"
    obj_badbox = "<object><name>half</name><bndbox><xmin>1</xmin><ymin>2</ymin></bndbox></object>"
    xml = (f"<annotation><filename>v1.png</filename><size><width>40</width><height>30</height><depth>3</depth></size>"
           f"{obj_ok}{obj_nobox}{obj_badbox}</annotation>")
    (d / "v1.xml").write_text(xml, encoding="utf-8")
    (d / "v2.xml").write_text("<annotation><filename>v2.png</filename><size><width>4", encoding="utf-8")  # truncated
    return {"voc": d}


def _write_yolo(d: Path) -> dict[str, Path]:
    imgs, labels = d / "images", d / "labels"
    imgs.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "classes.txt").write_text("".join(f"{n}\n" for n in ODD_NAMES[:5]), encoding="utf-8")
    Image.fromarray(_noise(30, 40, 9)).save(imgs / "y1.png")
    (labels / "y1.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"            # line 1: fine
        "1 0.5 0.5 0.2\n"                # line 2: 4 fields
        "2 0.5 0.5 0.2 0.2 1.9\n"        # line 3: 6 fields: a box and a confidence, here above 1
        "3 1.5 0.5 0.2 0.2\n"            # line 4: cx > 1
        "4 0.5 -0.1 0.2 0.2\n"           # line 5: cy < 0
        "7 0.5 0.5 0.2 0.2\n"            # line 6: class out of range
        "x 0.5 0.5 0.2 0.2\n",           # line 7: non-numeric
        encoding="utf-8")
    return {"yolo_labels": labels, "yolo_images": imgs}


YOLO_CASES = [("line 2", "got 4"), ("line 3", "confidence must lie in [0, 1]"), ("line 4", "[0, 1]"), ("line 5", "[0, 1]"),
              ("line 6", "class 7 not in"), ("line 7", "non-numeric")]


if __name__ == "__main__":
    for k, v in make_corpus(sys.argv[1] if len(sys.argv) > 1 else "bad_corpus").items():
        print(f"{k}: {v}")
