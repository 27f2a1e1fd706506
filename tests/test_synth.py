"""The synthetic panda set: deterministic, exact boxes from visible pixels, sane counts and sizes."""
from __future__ import annotations

import json

import numpy as np

import qualmet
from qualmet.imageio import read_image
from qualmet.synth import generate, render_frame


def test_same_seed_same_bytes_and_pixels(tmp_path):
    a = generate(tmp_path / "a", n_train=12, n_test=4, seed=5, size=96, workers=1)
    b = generate(tmp_path / "b", n_train=12, n_test=4, seed=5, size=96, workers=1)
    c = generate(tmp_path / "c", n_train=12, n_test=4, seed=6, size=96, workers=1)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert a["test"].read_bytes() == b["test"].read_bytes()
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()
    assert not np.array_equal(read_image(tmp_path / "a/images/train_00001.jpg"), read_image(tmp_path / "c/images/train_00001.jpg"))


def test_boxes_are_the_tight_boxes_of_visible_panda_pixels(tmp_path):
    r = generate(tmp_path / "s", n_train=30, n_test=0, seed=1, size=128, workers=1)
    d = json.loads(r["train"].read_text())
    by_image = {}
    for a in d["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    for im in d["images"][:30]:
        index = im["id"] - 1
        img, masks, boxes = render_frame(1, index, 128)
        assert sorted(map(tuple, by_image.get(im["id"], []))) == sorted(tuple(float(v) for v in b) for b in boxes)
        for m, (x, y, w, h) in zip(masks, boxes):
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            # panda pixels are black or white: the mask marks real panda fur, not background
            px = img[m]
            sat = px.max(1).astype(int) - px.min(1).astype(int)
            assert np.mean(sat < 40) > 0.9


def test_counts_sizes_and_splits(tmp_path):
    r = generate(tmp_path / "s", n_train=150, n_test=30, seed=0, size=256, workers=2)
    ds = qualmet.load_coco(r["train"])
    per = ds.annotations.groupby("image_id").size().reindex(ds.images.id, fill_value=0)
    assert per.min() == 0 and per.max() <= 5 and per.mean() > 1.2
    side = np.maximum(ds.annotations.w, ds.annotations.h) / 256
    assert side.min() < 0.12 and side.max() > 0.45 and side.max() <= 1.0
    test = qualmet.load_coco(r["test"])
    assert len(test.images) == 30 and set(test.images.file_name).isdisjoint(ds.images.file_name)
    assert (tmp_path / "s" / "README.md").read_text().startswith("# qualmet synthetic pandas")
    from qualmet.validate import validate

    assert [p for p in validate(ds) if p.severity == "error"] == []


def test_cli_with_a_process_pool_gives_the_same_files_as_one_worker(tmp_path):
    from qualmet.cli import main

    assert main(["synth", "--out", str(tmp_path / "p"), "--train", "36", "--test", "4", "--size", "64",
                 "--seed", "2", "--workers", "2"]) == 0  # >= 32 frames: the pool is used
    generate(tmp_path / "s", n_train=36, n_test=4, seed=2, size=64, workers=1)
    for name in ("train.json", "test.json", "README.md"):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "s" / name).read_bytes()
    files = sorted(p.name for p in (tmp_path / "p" / "images").iterdir())
    assert len(files) == 40 and files == sorted(p.name for p in (tmp_path / "s" / "images").iterdir())
    for f in files:
        assert (tmp_path / "p" / "images" / f).read_bytes() == (tmp_path / "s" / "images" / f).read_bytes()


def test_pandas_are_black_and_white_with_both_colours_visible():
    seen = 0
    for index in range(40):
        img, masks, boxes = render_frame(0, index, 256)
        assert len(masks) == len(boxes) <= 5
        for m in masks:
            if m.sum() < 400:  # small or mostly hidden: may show one colour only
                continue
            grey = img[m].mean(axis=1)
            dark, bright = np.mean(grey < 70), np.mean(grey > 190)
            assert dark > 0.05 and bright > 0.2 and dark + bright > 0.8, (index, dark, bright)  # the rest: edges
            seen += 1
    assert seen > 20
    # the unlabelled background is not: few pixels outside the pandas are panda-black or panda-white
    img, masks, _ = render_frame(0, 1, 256)
    outside = ~np.any(masks, axis=0) if masks else np.ones(img.shape[:2], bool)
    assert np.mean(img[outside].mean(axis=1) < 40) < 0.2
