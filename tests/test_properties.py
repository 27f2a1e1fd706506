"""Property tests (hypothesis): box maths, COCO parsing of arbitrary JSON, COCO round-trip, and the
built-in metrics never giving inf or raising on valid boxes inside small random images."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualmet.boxes import clip_xywh, iou_matrix, iou_pairs, xywh_to_xyxy, xywh_to_yolo, xyxy_to_xywh, yolo_to_xywh
from qualmet.errors import DatasetError
from qualmet.formats import load_coco, parse_coco, save_coco
from qualmet.context import MetricContext
from qualmet.discovery import load_registry

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
coord = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
size = st.floats(0.01, 1e4, allow_nan=False, allow_infinity=False)
box = st.tuples(coord, coord, size, size)


@FAST
@given(st.lists(box, min_size=0, max_size=8), st.integers(1, 5000), st.integers(1, 5000))
def test_context_integer_boxes(boxes, W, H):
    # boxes_int: rounded outward, clipped to the image, x2 >= x1; small_boxes_int: the same on the
    # sample grid (corners rounded up, clipped to the grid's shape)
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    ctx = MetricContext(1, "f.jpg", W, H, (None, 0, len(b)), boxes=b)
    for i, (x, y, w, h) in enumerate(b):
        x1, y1 = min(max(math.floor(x), 0), W), min(max(math.floor(y), 0), H)
        x2, y2 = min(max(math.ceil(x + w), 0), W), min(max(math.ceil(y + h), 0), H)
        assert ctx.boxes_int[i].tolist() == [x1, y1, max(x2, x1), max(y2, y1)]
        s = ctx.small_stride
        want = [min(-(-v // s), lim) for v, lim in zip(ctx.boxes_int[i].tolist(), (-(-W // s), -(-H // s)) * 2)]
        assert ctx.small_boxes_int[i].tolist() == want
    assert ctx.boxes_int.shape == (len(b), 4) and ctx.boxes_int.dtype.kind == "i"


@FAST
@given(st.lists(box, min_size=1, max_size=8), st.integers(1, 5000), st.integers(1, 5000))
def test_box_conversions_round_trip(boxes, W, H):
    b = np.array(boxes, dtype=np.float64)
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(b)), b, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(yolo_to_xywh(xywh_to_yolo(b, W, H), W, H), b, rtol=1e-9, atol=1e-6)


@FAST
@given(st.lists(box, min_size=1, max_size=6), st.lists(box, min_size=1, max_size=6))
def test_iou_symmetric_bounded(a, b):
    m = iou_matrix(a, b)
    assert m.shape == (len(a), len(b))
    np.testing.assert_allclose(m, iou_matrix(b, a).T, atol=1e-12)
    assert np.isfinite(m).all() and (m >= 0).all() and (m <= 1).all()
    np.testing.assert_allclose(np.diag(iou_matrix(a, a)), 1.0)
    n = min(len(a), len(b))  # the element-wise form agrees with the matrix's diagonal
    np.testing.assert_allclose(iou_pairs(a[:n], b[:n]), np.diag(iou_matrix(a[:n], b[:n])), atol=1e-12)


@FAST
@given(box, st.floats(0.01, 1e3), st.floats(0.01, 1e3))
def test_iou_zero_on_disjoint(b, gap, w2):
    x, y, w, h = b
    other = (x + w + gap, y, w2, h)  # starts right of b: no overlap
    assert iou_matrix([b], [other])[0, 0] == 0.0


@FAST
@given(st.lists(st.tuples(coord, coord, st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)), min_size=1, max_size=8),
       st.integers(1, 4000), st.integers(1, 4000))
def test_clip_stays_inside(boxes, W, H):
    c = xywh_to_xyxy(clip_xywh(boxes, W, H))
    assert (c[:, [0, 2]] >= 0).all() and (c[:, [0, 2]] <= W).all()
    assert (c[:, [1, 3]] >= 0).all() and (c[:, [1, 3]] <= H).all()


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=6), ch, max_size=4), max_leaves=20)
keys = st.sampled_from(["id", "image_id", "category_id", "file_name", "width", "height", "bbox", "name", "area",
                        "iscrowd", "score", "x", "w", "supercategory"])
record = st.dictionaries(keys, json_like | st.integers(-3, 3) | st.lists(st.integers(-5, 50) | st.floats(), max_size=5),
                         max_size=8)
coco_like = st.fixed_dictionaries({}, optional={"images": st.lists(record, max_size=4) | json_like,
                                                "annotations": st.lists(record, max_size=4) | json_like,
                                                "categories": st.lists(record, max_size=3) | json_like,
                                                "info": json_like})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_like, coco_like))
def test_parse_coco_raises_only_dataset_error(d):
    try:
        ds = parse_coco(d)
    except DatasetError:
        return
    assert ds.images["id"].is_unique and ds.annotations["id"].is_unique
    assert set(ds.annotations["image_id"]) <= set(ds.images["id"])
    assert np.isfinite(ds.boxes()).all()
    ds.to_coco()


@st.composite
def datasets(draw):
    n_cat = draw(st.integers(1, 3))
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=n_cat, max_size=n_cat))
    cats = [{"id": i + 1, "name": n, "supercategory": "s"} for i, n in enumerate(names)]
    n_img = draw(st.integers(1, 4))
    images = [{"id": 10 + i, "file_name": f"f{i}.png", "width": draw(st.integers(1, 500)),
               "height": draw(st.integers(1, 500))} for i in range(n_img)]
    anns = []
    for k in range(draw(st.integers(0, 8))):
        im = draw(st.sampled_from(images))
        b = [draw(st.floats(0, im["width"], allow_nan=False)), draw(st.floats(0, im["height"], allow_nan=False)),
             draw(st.floats(0.5, 500, allow_nan=False)), draw(st.floats(0.5, 500, allow_nan=False))]
        anns.append({"id": k + 1, "image_id": im["id"], "category_id": draw(st.integers(1, n_cat)), "bbox": b,
                     "area": b[2] * b[3], "iscrowd": draw(st.integers(0, 1))})
    return {"images": images, "annotations": anns, "categories": cats}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datasets())
def test_coco_save_load_exact(tmp_path, d):
    ds = parse_coco(d, source="gen")
    assert not ds.skipped
    save_coco(ds, tmp_path / "d.json")
    back = load_coco(tmp_path / "d.json", images=tmp_path)
    pd.testing.assert_frame_equal(back.images, ds.images)
    pd.testing.assert_frame_equal(back.annotations, ds.annotations)
    pd.testing.assert_frame_equal(back.categories, ds.categories)
    assert json.loads((tmp_path / "d.json").read_text(encoding="utf-8")) == ds.to_coco()


REG = load_registry(entry_points=False)
SPECS = [s for s in REG.select(None) if not s.needs_predictions]


@st.composite
def frames(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2 ** 16))
    kind = draw(st.sampled_from(["noise", "flat", "black", "white"]))
    rng = np.random.default_rng(seed)
    img = {"noise": lambda: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
           "flat": lambda: np.full((h, w, 3), int(rng.integers(0, 256)), np.uint8),
           "black": lambda: np.zeros((h, w, 3), np.uint8),
           "white": lambda: np.full((h, w, 3), 255, np.uint8)}[kind]()
    boxes = []
    for _ in range(draw(st.integers(0, 4))):
        x = draw(st.floats(0, w - 0.01 if w > 0.01 else 0))
        y = draw(st.floats(0, h - 0.01 if h > 0.01 else 0))
        bw = draw(st.floats(0.01, w - x)) if w - x > 0.01 else w - x
        bh = draw(st.floats(0.01, h - y)) if h - y > 0.01 else h - y
        boxes.append((x, y, bw, bh))
    return img, [b for b in boxes if b[2] > 0 and b[3] > 0]


@settings(max_examples=40, deadline=None)
@given(frames())
def test_builtin_metrics_finite_or_nan(frame):
    img, boxes = frame
    H, W = img.shape[:2]
    anns = pd.DataFrame({"id": np.arange(1, len(boxes) + 1, dtype=np.int64), "image_id": np.ones(len(boxes), np.int64),
                         "category_id": (np.arange(len(boxes)) % 2 + 1).astype(np.int64),
                         **{c: np.array([b[i] for b in boxes], dtype=np.float64) for i, c in enumerate("xywh")}})
    anns["area"] = anns["w"] * anns["h"]
    anns["iscrowd"] = 0
    images = pd.DataFrame({"id": [1], "file_name": ["f.png"], "width": [W], "height": [H]})
    ctx = MetricContext(1, "f.png", W, H, anns, image=img, boxes=anns[["x", "y", "w", "h"]].to_numpy())
    for s in SPECS:
        if s.level == "object" and not s.vectorised and len(anns) == 0:
            continue  # the runner calls per-frame object metrics only on frames with objects
        if s.vectorised:
            v = s.func(anns, images)
        else:
            v = s.func(ctx)
            if s.finalize is not None:
                v = s.finalize(np.asarray(v, dtype=np.float64).reshape(len(anns), -1), anns)
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        assert len(arr) == (len(anns) if s.level == "object" else 1), s.name
        assert not np.isinf(arr).any(), f"{s.name} gave inf on a {W}x{H} image with boxes {boxes}: {arr}"
