"""Each built-in metric on constructed cases whose answer is known (synthetic images drawn with cv2)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from qualmet.discovery import load_registry

from .metric_helpers import anns_df, ctx_for, draw_panda, foliage

REG = load_registry(entry_points=False)
IMAGES = pd.DataFrame({"id": [1, 2], "file_name": ["a.png", "b.png"], "width": [100, 200], "height": [100, 50]})


def f(name):
    return REG[name].func


@pytest.fixture(scope="module")
def panda():
    img = draw_panda(foliage(200, 240), 70, 60, 90, 70)
    return img, [70, 60, 90, 70]


def test_every_builtin_has_docstring_and_orientation():
    import importlib

    for spec in REG.select(None):
        mod = importlib.import_module(spec.func.__module__)
        assert spec.source.startswith("builtin"), spec
        assert mod.__doc__ and len(mod.__doc__.strip()) > 40, f"{spec.name}: module docstring says what and why"
        assert spec.worse in ("low", "high") and spec.description


def test_box_tightness_drops_for_loose_and_shifted(panda):
    img, (x, y, w, h) = panda
    # tight; loose (padded more left/right than up/down); shifted sideways (the object is cut)
    boxes = [[x, y, w, h], [x - 25, y - 3, w + 40, h + 6], [x + 40, y + 5, w, h], [x - 9, y - 7, w + 18, h + 14]]
    t = f("box_tightness")(ctx_for(img, boxes))
    assert t[0] > 0.9
    assert t[1] < t[0] - 0.1 and t[2] < t[0] - 0.1, t
    # the reference definition compares shapes only: padding in proportion keeps it high (documented)
    assert t[3] > 0.9


def test_box_tightness_iou_drops_for_loose_shifted_and_proportional_padding(panda):
    img, (x, y, w, h) = panda
    boxes = [[x, y, w, h], [x - 20, y - 15, w + 40, h + 30], [x + 30, y + 20, w, h], [x - 9, y - 7, w + 18, h + 14]]
    t = f("box_tightness_iou")(ctx_for(img, boxes))
    assert t[0] > 0.85, t
    assert max(t[1:]) < t[0] - 0.1, t


def test_box_tightness_iou_otsu_variant_runs(panda):
    from qualmet.builtin_metrics.box_tightness_iou import tightness_iou

    img, (x, y, w, h) = panda
    t = tightness_iou(ctx_for(img, [[x, y, w, h], [x + 30, y + 20, w, h]]), method="otsu")
    assert t[0] > t[1]


def test_box_tightness_iou_colour_distance_rounds_half_to_even():
    """The ring median can end in .5; the distance |v - median| is then rounded half to even, by
    qualmet itself rather than by OpenCV's absdiff (whose rounding changed between releases)."""
    from qualmet.builtin_metrics.box_tightness_iou import colour_distance_table

    t = colour_distance_table([100.5, 101.5, 7.0])[:, 0, :].astype(int)
    assert t[[99, 100, 101, 102], 0].tolist() == [2, 0, 0, 2]  # 1.5 -> 2, 0.5 -> 0, 0.5 -> 0, 1.5 -> 2
    assert t[[99, 100, 101, 102], 1].tolist() == [2, 2, 0, 0]  # 2.5 -> 2, 1.5 -> 2, 0.5 -> 0, 0.5 -> 0
    assert t[[0, 7, 255], 2].tolist() == [7, 0, 248]
    # applied with cv2.LUT, each channel goes through its own column of the table
    lab = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    got = cv2.LUT(lab, colour_distance_table([100.5, 101.5, 7.0]))
    assert np.array_equal(got, np.rint(np.abs(lab - np.array([100.5, 101.5, 7.0]))).astype(np.uint8))


def test_black_white_ratio(panda):
    img, (x, y, w, h) = panda
    plain = foliage(100, 100)
    plain[10:40, 10:40] = 255
    plain[50:60, 50:60] = 0
    bw = f("black_white_ratio")(ctx_for(plain, [[10, 10, 30, 30], [50, 50, 10, 10], [70, 70, 20, 20], [0, 0, 0, 0]]))
    assert bw[0] == pytest.approx(1.0) and bw[1] == pytest.approx(1.0) and bw[2] == pytest.approx(0.0)
    assert math.isnan(bw[3])  # empty box
    t = f("black_white_ratio")(ctx_for(img, [[x, y, w, h], [x + 45, y + 35, w, h]]))
    assert t[1] < t[0] - 0.2


def test_black_white_ratio_large_image_sampling_matches_exact():
    rng = np.random.default_rng(3)
    img = foliage(900, 1200)
    mask = rng.random((900, 1200)) < 0.3
    img[mask] = 250
    exact = mask[100:500, 200:800].mean()
    v = f("black_white_ratio")(ctx_for(img, [[200, 100, 600, 400]]))[0]
    assert v == pytest.approx(exact, abs=0.02)


def test_black_white_ratio_crop_path_equals_whole_frame_path():
    # few boxes are measured crop by crop, many (or large) boxes on one whole-frame mask; both read
    # the same sample grid, so a box gets the same value either way (odd image size: edge clipping)
    rng = np.random.default_rng(5)
    img = foliage(481, 643)
    img[rng.random((481, 643)) < 0.35] = 250
    img[rng.random((481, 643)) < 0.1] = 5
    few = [[3.5, 7, 120, 90], [600, 440, 43, 41], [200.2, 150.7, 61.3, 77.9]]  # last two: edge, fractions
    crowd = few + [[float(x), float(y), 20, 20] for x in range(0, 400, 40) for y in (300, 340)]
    a = f("black_white_ratio")(ctx_for(img, few))
    b = f("black_white_ratio")(ctx_for(img, crowd))
    assert len(crowd) > 16 and np.array_equal(a, b[:3])
    huge = f("black_white_ratio")(ctx_for(img, [[0, 0, 643, 481], *few[:1]]))  # one box covers the frame
    assert huge[1] == a[0] and 0.3 < huge[0] < 0.5


def test_context_grid_is_strided_slicing():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    ctx = ctx_for(rgb, [])
    for (x1, y1, x2, y2, k) in [(0, 0, 131, 97, 2), (5, 3, 130, 96, 3), (7, 9, 8, 10, 2), (0, 0, 131, 97, 1), (10, 10, 10, 20, 2)]:
        want = rgb[y1:y2:k, x1:x2:k]
        for arr in (rgb, ctx.gray, rgb[:, ::-1]):  # colour, grey, a non-contiguous view
            got = ctx.grid(x1, y1, x2, y2, k, arr)
            ref = arr[y1:y2:k, x1:x2:k]
            assert got.flags.c_contiguous and got.shape == ref.shape and np.array_equal(got, ref)
        assert np.array_equal(ctx.grid(x1, y1, x2, y2, k), want)
    big = ctx_for(rng.integers(0, 256, (700, 900, 3), dtype=np.uint8), [])
    assert big.small_stride == 3 and np.array_equal(big.small_gray, cv2.cvtColor(big.small, cv2.COLOR_RGB2GRAY))
    assert big.small_shape == big.small.shape[:2] == (234, 300)


def test_sampled_frame_statistics_stay_close_to_full_resolution():
    # colorfulness (every s-th row) and image_entropy (every s-th pixel) on a 1200x900 frame
    img = draw_panda(foliage(900, 1200, seed=2), 300, 200, 500, 400)
    img[::7, ::5] = np.random.default_rng(2).integers(0, 256, img[::7, ::5].shape)
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, (r + g) / 2 - b
    want = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    ctx = ctx_for(img, [])
    assert ctx.small_stride == 4 and f("colorfulness")(ctx) == pytest.approx(want, rel=0.01)
    hist = np.bincount(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    assert f("image_entropy")(ctx) == pytest.approx(-(p * np.log2(p)).sum(), abs=0.05)


def test_class_color_consistency_flags_the_odd_box(panda):
    spec = REG["class_color_consistency"]
    img = foliage(200, 240)
    for x in (10, 70, 130):
        draw_panda(img, x, 20, 50, 40)
    boxes = [[10, 20, 50, 40], [70, 20, 50, 40], [130, 20, 50, 40], [60, 120, 50, 40]]  # last: foliage, same class
    hists = spec.func(ctx_for(img, boxes))
    assert hists.shape == (4, 64) and np.allclose(hists.sum(axis=1), 1)
    d = spec.finalize(hists, pd.DataFrame({"category_id": [1, 1, 1, 1]}))
    assert int(np.argmax(d)) == 3 and d[3] > 2 * d[:3].max()
    alone = spec.finalize(hists[:2], pd.DataFrame({"category_id": [1, 2]}))
    assert np.isnan(alone).all()  # a class with one box has no reference


def test_class_color_consistency_blocks_do_not_change_the_answer(monkeypatch):
    import sys

    spec = REG["class_color_consistency"]
    rng = np.random.default_rng(0)
    hists = rng.random((50, 64))
    hists /= hists.sum(axis=1, keepdims=True)
    hists[7] = np.nan  # a box without a histogram stays NaN
    anns = pd.DataFrame({"category_id": rng.integers(1, 4, 50)})
    whole = spec.finalize(hists, anns)
    monkeypatch.setattr(sys.modules[spec.func.__module__], "BLOCK", 3)
    np.testing.assert_allclose(spec.finalize(hists, anns), whole, rtol=1e-12)
    assert np.isnan(whole[7]) and np.isfinite(np.delete(whole, 7)).all()


def test_label_only_geometry():
    a = anns_df([(1, 1, 1, 5, 10, 20, 10), (2, 1, 1, 40, 10, 10, 10), (3, 2, 1, 190, 0, 20, 25)])
    assert f("aspect_ratio")(a, IMAGES).tolist() == [2.0, 1.0, 0.8]
    np.testing.assert_allclose(f("area_relative")(a, IMAGES), [200 / 1e4, 100 / 1e4, 500 / 1e4])
    np.testing.assert_allclose(f("border_distance")(a, IMAGES), [5 / 100, 10 / 100, -10 / 50])


def test_proximity_and_duplicates():
    a = anns_df([(1, 1, 1, 0, 0, 10, 10), (2, 1, 1, 20, 0, 10, 10), (3, 1, 1, 20.5, 0, 10, 10), (4, 2, 1, 0, 0, 5, 5)])
    prox = f("object_proximity")(a, IMAGES)
    assert prox[0] == pytest.approx(1.0)  # 10 px gap / sqrt(100)
    assert prox[1] == 0.0 and math.isnan(prox[3])  # overlapping; alone in its frame
    iou = f("max_iou_other")(a, IMAGES)
    assert iou[1] == pytest.approx(9.5 / 10.5) and iou[2] == pytest.approx(9.5 / 10.5)
    assert iou[0] == 0.0 and iou[3] == 0.0


def test_object_count_includes_empty_frames():
    a = anns_df([(1, 1, 1, 0, 0, 10, 10), (2, 1, 1, 20, 0, 10, 10)])
    assert list(f("object_count")(a, IMAGES)) == [2.0, 0.0]


def test_confidence_and_missed_by_labels():
    a = anns_df([(1, 1, 1, 0, 0, 10, 10), (2, 1, 2, 50, 50, 10, 10), (3, 2, 1, 0, 0, 10, 10)])
    p = anns_df([(1, 1, 1, 0, 0, 10, 10, 0.9), (2, 1, 1, 1, 0, 10, 10, 0.95),  # same class, IoU 1 and 0.82
                 (3, 1, 1, 50, 50, 10, 10, 0.99),  # other class than label 2
                 (4, 1, 1, 80, 80, 10, 10, 0.7), (5, 1, 1, 80, 0, 10, 10, 0.3),  # unlabelled: confident, weak
                 (6, 2, 1, 6, 0, 10, 10, 0.8)])  # IoU 0.25 with label 3
    assert f("confidence")(a, IMAGES, p).tolist() == [0.95, 0.0, 0.0]
    assert list(f("missed_by_labels")(a, IMAGES, p)) == [1.0, 1.0]


def test_frame_pixel_metrics():
    black = np.zeros((60, 80, 3), np.uint8)
    white = np.full((60, 80, 3), 255, np.uint8)
    checker = np.indices((60, 80)).sum(axis=0) % 2 * 255
    checker = np.repeat(checker[..., None], 3, axis=2).astype(np.uint8)
    halves = black.copy()
    halves[:, 40:] = 255
    assert f("brightness")(ctx_for(black, [])) == 0.0 and f("brightness")(ctx_for(white, [])) == pytest.approx(1.0)
    assert f("contrast")(ctx_for(white, [])) == 0.0 and f("contrast")(ctx_for(checker, [])) == pytest.approx(0.5)
    assert f("image_entropy")(ctx_for(white, [])) == 0.0
    assert f("image_entropy")(ctx_for(halves, [])) == pytest.approx(1.0)
    assert f("colorfulness")(ctx_for(checker, [])) == pytest.approx(0.0, abs=1e-6)  # grey
    scene = draw_panda(foliage(120, 160), 40, 30, 60, 50)
    assert f("colorfulness")(ctx_for(scene, [])) > 10
    rgb = np.random.default_rng(3).integers(0, 256, (60, 80, 3)).astype(np.uint8)  # the textbook formula
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, (r + g) / 2 - b
    want = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert f("colorfulness")(ctx_for(rgb, [])) == pytest.approx(want, rel=1e-9)
    blurred = cv2.GaussianBlur(scene, (9, 9), 3)
    assert f("sharpness")(ctx_for(blurred, [])) < 0.5 * f("sharpness")(ctx_for(scene, []))
