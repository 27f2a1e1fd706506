"""Label-noise injection: every error does what its manifest row says, and nothing else; exact round trips."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import qualmet
from qualmet import manifest, noise
from qualmet.boxes import iou_matrix
from qualmet.cli import main
from qualmet.dataset import Dataset
from qualmet.errors import QualmetError
from qualmet.formats import load_coco, save_coco

W, H = 640, 480


def synthetic(n_images: int = 100, seed: int = 123) -> Dataset:
    """Two boxes per frame, well inside a 640x480 image (room for any growth), three categories."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"f{i}.png", "width": W, "height": H} for i in range(1, n_images + 1)]
    anns, k = [], 0
    for i in range(1, n_images + 1):
        for (cx, cy) in ((180, 170), (430, 320)):
            k += 1
            w, h = rng.uniform(40, 60), rng.uniform(30, 40)
            x, y = cx - w / 2 + rng.uniform(-5, 5), cy - h / 2 + rng.uniform(-5, 5)
            anns.append({"id": 10 * k, "image_id": i, "category_id": 1 + k % 3, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in ((1, "cat"), (2, "dog"), (3, "bird"))]
    return Dataset.from_records(images, anns, cats)


@pytest.fixture(scope="module")
def raccoon(raccoon_dir):
    return qualmet.load_dataset(raccoon_dir / "annotations")


def ann_records(ds: Dataset) -> dict[int, str]:
    """Annotation id -> its exact JSON text in the COCO export."""
    return {a["id"]: json.dumps(a, sort_keys=True) for a in ds.to_coco()["annotations"]}


def box(ds: Dataset, aid: int) -> np.ndarray:
    return ds.annotations.set_index("id").loc[aid, ["x", "y", "w", "h"]].to_numpy(dtype=float)


# -- determinism and round trips ---------------------------------------------------------------

def test_same_seed_same_result_other_seed_different(raccoon):
    a, ma = noise.corrupt(raccoon, rate=0.3, seed=5)
    b, mb = noise.corrupt(raccoon, rate=0.3, seed=5)
    c, mc = noise.corrupt(raccoon, rate=0.3, seed=6)
    assert a.to_coco() == b.to_coco()
    pd.testing.assert_frame_equal(ma, mb)
    assert a.to_coco() != c.to_coco()
    assert not ma[["annotation_id", "type"]].equals(mc[["annotation_id", "type"]])


@pytest.mark.parametrize("make", ["raccoon", "synthetic"])
def test_restore_and_apply_are_exact(make, raccoon):
    clean = raccoon if make == "raccoon" else synthetic()
    noisy, m = noise.corrupt(clean, rate=0.5, seed=2)
    assert len(m) > 0
    assert noise.restore(noisy, m).to_coco() == noise.canonical(clean).to_coco()
    assert noise.apply(clean, m).to_coco() == noisy.to_coco()
    # byte-identical after the round trip, too
    assert ann_records(noise.restore(noisy, m)) == ann_records(noise.canonical(clean))


def test_restore_keeps_extra_keys_of_deleted_boxes():
    clean = synthetic(20)
    clean.annotations["segmentation"] = [[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]] * len(clean.annotations)
    noisy, m = noise.corrupt(clean, rate=0.5, seed=0, types=["missing"])
    assert (m["type"] == "missing").sum() == 20
    assert noise.restore(noisy, m).to_coco() == clean.to_coco()


def test_untouched_annotations_are_byte_identical(raccoon):
    noisy, m = noise.corrupt(raccoon, rate=0.3, seed=1)
    touched = set(m["annotation_id"])
    before, after = ann_records(raccoon), ann_records(noisy)
    untouched = set(before) - touched
    assert len(untouched) >= len(before) - len(m)
    for aid in untouched:
        assert after[aid] == before[aid]
    assert noisy.to_coco()["images"] == raccoon.to_coco()["images"]
    assert noisy.to_coco()["categories"] == raccoon.to_coco()["categories"]


def test_restore_images_restores_only_those_frames():
    clean = synthetic(60)
    noisy, m = noise.corrupt(clean, rate=0.5, seed=3)
    chosen = sorted(set(m["image_id"]))[::2]
    part = noise.restore_images(noisy, m, chosen)
    by_clean = _group(clean)
    by_noisy, by_part = _group(noisy), _group(part)
    for iid in clean.images["id"]:
        expected = by_clean.get(iid, []) if iid in chosen else by_noisy.get(iid, [])
        assert by_part.get(iid, []) == expected, iid


def _group(ds: Dataset) -> dict[int, list]:
    out: dict[int, list] = {}
    for a in ds.to_coco()["annotations"]:
        out.setdefault(a["image_id"], []).append(a)
    return out


def test_manifest_save_load_round_trip(tmp_path, raccoon):
    clean = synthetic(20)
    clean.annotations["segmentation"] = [[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]] * len(clean.annotations)
    noisy, m = noise.corrupt(clean, rate=0.6, seed=4)
    p = manifest.save_manifest(m, tmp_path / "m.json")
    text = p.read_text()
    assert "NaN" not in text and "null" in text
    back = manifest.load_manifest(p)
    pd.testing.assert_frame_equal(back, m)
    assert noise.restore(noisy, back).to_coco() == clean.to_coco()
    assert set(manifest.MANIFEST_COLUMNS[:13]) <= set(json.loads(text)[0])


def test_manifest_not_applicable_fields_are_nan():
    _, m = noise.corrupt(synthetic(50), rate=0.7, seed=0)
    added = m[m["type"].isin(["spurious", "duplicate"])]
    assert len(added) and added[manifest.ORIG + ["orig_category_id"]].isna().all().all()
    assert added[manifest.NEW + ["new_category_id"]].notna().all().all()
    miss = m[m["type"] == "missing"]
    assert len(miss) and miss[manifest.NEW + ["new_category_id"]].isna().all().all()
    assert miss[manifest.ORIG + ["orig_category_id"]].notna().all().all()


# -- each error type -----------------------------------------------------------------------------

def _one_type(t: str, n_images: int = 100):
    clean = synthetic(n_images)
    noisy, m = noise.corrupt(clean, rate=0.3, seed=11, types=[t])
    assert len(m) > 0 and set(m["type"]) == {t}
    return clean, noisy, m


def _changed_in_place(clean, noisy, m, fields):
    """Only the manifest's annotations differ, and only in these fields."""
    c, n = clean.annotations.set_index("id"), noisy.annotations.set_index("id")
    assert list(c.index) == list(n.index)
    ids = set(m["annotation_id"])
    for aid in c.index:
        diff = {k for k in c.columns if c.at[aid, k] != n.at[aid, k]}
        if aid in ids:
            assert diff and diff <= set(fields), (aid, diff)
        else:
            assert not diff, (aid, diff)


@pytest.mark.parametrize("t", ["loose", "shift", "squash"])
def test_box_errors_change_only_the_box(t):
    clean, noisy, m = _one_type(t)
    assert len(m) == 60  # 0.3 x 200 boxes, one error each
    assert m["annotation_id"].is_unique
    _changed_in_place(clean, noisy, m, {"x", "y", "w", "h", "area"})
    for r in m.itertuples():
        o, b = box(clean, r.annotation_id), box(noisy, r.annotation_id)
        assert np.allclose(b, [r.new_x, r.new_y, r.new_w, r.new_h]) and np.allclose(o, [r.orig_x, r.orig_y, r.orig_w, r.orig_h])
        assert noisy.annotations.set_index("id").at[r.annotation_id, "area"] == pytest.approx(b[2] * b[3])
        if t == "loose":
            assert b[0] <= o[0] and b[1] <= o[1] and b[0] + b[2] >= o[0] + o[2] and b[1] + b[3] >= o[1] + o[3]
            assert 1.3 - 1e-9 <= b[2] / o[2] <= 2 + 1e-9 and 1.3 - 1e-9 <= b[3] / o[3] <= 2 + 1e-9
            assert 1.3 ** 2 - 1e-9 <= (b[2] * b[3]) / (o[2] * o[3]) <= 4 + 1e-9
        elif t == "shift":
            assert np.allclose(b[2:], o[2:])
            d = math.hypot((b[0] - o[0]) / o[2], (b[1] - o[1]) / o[3])
            assert 0.3 - 1e-9 <= d <= 0.7 + 1e-9
            assert b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= W and b[1] + b[3] <= H
        else:
            sx, sy = b[2] / o[2], b[3] / o[3]
            unchanged, scaled = (sy, sx) if not math.isclose(sx, 1.0) else (sx, sy)
            assert unchanged == pytest.approx(1.0)
            assert 0.4 - 1e-9 <= scaled <= 0.7 + 1e-9 or 1.5 - 1e-9 <= scaled <= 2.5 + 1e-9
            assert b[0] + b[2] / 2 == pytest.approx(o[0] + o[2] / 2) and b[1] + b[3] / 2 == pytest.approx(o[1] + o[3] / 2)


def test_loose_asymmetric_and_aspect_changes():
    clean, noisy, m = _one_type("loose")
    left = m["orig_x"] - m["new_x"]
    right = (m["new_x"] + m["new_w"]) - (m["orig_x"] + m["orig_w"])
    assert not np.allclose(left, right)
    aspect_change = (m["new_w"] / m["new_h"]) / (m["orig_w"] / m["orig_h"])
    assert aspect_change.std() > 0.05


def test_loose_is_clipped_to_the_image_but_contains_the_box():
    ds = Dataset.from_records([{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
                              [{"id": i, "image_id": 1, "category_id": 1, "bbox": [2.0, 3.0, 90.0, 70.0]} for i in range(1, 11)],
                              [{"id": 1, "name": "x"}])
    noisy, m = noise.corrupt(ds, rate=1.0, seed=0, types=["loose"])
    for r in m.itertuples():
        assert r.new_x <= 2 and r.new_y <= 3 and r.new_x >= 0 and r.new_y >= 0
        assert r.new_x + r.new_w <= 100 + 1e-9 and r.new_y + r.new_h <= 80 + 1e-9
        assert r.new_x + r.new_w >= 92 - 1e-9 and r.new_y + r.new_h >= 73 - 1e-9


def test_wrong_class_changes_only_the_category():
    clean, noisy, m = _one_type("wrong_class")
    _changed_in_place(clean, noisy, m, {"category_id"})
    assert (m["orig_category_id"] != m["new_category_id"]).all()
    assert set(m["new_category_id"].astype(int)) <= {1, 2, 3}
    assert len(set(m["new_category_id"].astype(int))) > 1


def test_missing_removes_exactly_those_boxes():
    clean, noisy, m = _one_type("missing")
    assert set(clean.annotations["id"]) - set(noisy.annotations["id"]) == set(m["annotation_id"])
    assert set(noisy.annotations["id"]) <= set(clean.annotations["id"])
    before, after = ann_records(clean), ann_records(noisy)
    assert all(after[i] == before[i] for i in after)


def test_duplicate_overlaps_its_source():
    clean, noisy, m = _one_type("duplicate")
    new = noisy.annotations[~noisy.annotations["id"].isin(clean.annotations["id"])].set_index("id")
    assert set(new.index) == set(m["annotation_id"]) and min(new.index) > clean.annotations["id"].max()
    before, after = ann_records(clean), ann_records(noisy)
    assert all(after[i] == before[i] for i in before)  # the originals are untouched
    for r in m.itertuples():
        src = clean.annotations.set_index("id").loc[int(r.source_id)]
        assert new.at[r.annotation_id, "image_id"] == src["image_id"]
        assert new.at[r.annotation_id, "category_id"] == src["category_id"]
        iou = iou_matrix(box(noisy, r.annotation_id), src[["x", "y", "w", "h"]].to_numpy(dtype=float))[0, 0]
        assert 0.7 < iou < 1.0


def test_spurious_avoids_every_true_box():
    clean, noisy, m = _one_type("spurious")
    assert len(m) == 60
    before, after = ann_records(clean), ann_records(noisy)
    assert set(before) <= set(after) and all(after[i] == before[i] for i in before)
    assert m["annotation_id"].min() > clean.annotations["id"].max() and m["annotation_id"].is_unique
    sizes = set(zip(clean.annotations["w"].round(6), clean.annotations["h"].round(6)))
    for r in m.itertuples():
        truth = clean.annotations[clean.annotations["image_id"] == r.image_id][["x", "y", "w", "h"]].to_numpy(dtype=float)
        b = box(noisy, r.annotation_id)
        assert iou_matrix(b, truth).max() < 0.1
        assert b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= W + 1e-9 and b[1] + b[3] <= H + 1e-9
        assert (round(b[2], 6), round(b[3], 6)) in sizes  # a real box's size (same image size here)


def test_spurious_skips_a_full_frame():
    ds = Dataset.from_records([{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
                              [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 100.0, 100.0]}],
                              [{"id": 1, "name": "x"}])
    noisy, m = noise.corrupt(ds, rate=1.0, seed=0, types=["spurious"])
    assert len(m) == 0 and noisy.to_coco() == ds.to_coco()


# -- rates, types, errors --------------------------------------------------------------------------

def test_rate_is_honoured_on_1000_boxes():
    clean = synthetic(500)  # 1000 boxes
    for rate in (0.1, 0.3):
        _, m = noise.corrupt(clean, rate=rate, seed=7)
        assert len(m) == pytest.approx(rate * 1000, abs=3)  # spurious may rarely be skipped
        per = m[m["type"] != "spurious"]
        assert per["annotation_id"].is_unique  # at most one error per annotation
        counts = m["type"].value_counts()
        assert set(counts.index) == set(manifest.ERROR_TYPES)
        share = rate * 1000 / 7
        sd = math.sqrt(rate * 1000 * (1 / 7) * (6 / 7))
        for t in manifest.ERROR_TYPES:
            assert abs(counts[t] - share) < 4 * sd, (t, counts[t])


def test_shares_weight_the_types():
    _, m = noise.corrupt(synthetic(500), rate=0.3, seed=0, types=["loose", "missing"], shares={"loose": 3, "missing": 1})
    c = m["type"].value_counts()
    assert c["loose"] > 2 * c["missing"] and set(c.index) == {"loose", "missing"}


def test_default_types_without_wrong_class_for_one_category(raccoon):
    assert "wrong_class" not in noise.applicable_types(raccoon)
    assert "wrong_class" in noise.applicable_types(synthetic(2))
    with pytest.raises(QualmetError, match="wrong_class"):
        noise.corrupt(raccoon, types=["wrong_class"])
    with pytest.raises(QualmetError, match="unknown noise type"):
        noise.corrupt(raccoon, types=["blur"])
    with pytest.raises(QualmetError, match="rate"):
        noise.corrupt(raccoon, rate=1.5)


def test_apply_refuses_a_foreign_manifest(raccoon):
    _, m = noise.corrupt(synthetic(20), rate=0.5, seed=0, types=["loose"])
    with pytest.raises(QualmetError, match="annotation"):
        noise.apply(synthetic(20, seed=999), m)


def test_rate_zero_is_identity(raccoon):
    noisy, m = noise.corrupt(raccoon, rate=0.0, seed=0)
    assert len(m) == 0 and noisy.to_coco() == raccoon.to_coco()


# -- CLI -------------------------------------------------------------------------------------------

def test_cli_corrupt_end_to_end(tmp_path, raccoon, capsys):
    src = tmp_path / "clean.json"
    save_coco(raccoon, src)
    out = tmp_path / "noisy.json"
    assert main(["corrupt", str(src), "--out", str(out), "--rate", "0.4", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    mpath = tmp_path / "noisy.manifest.json"
    assert out.is_file() and mpath.is_file()
    m = manifest.load_manifest(mpath)
    for t, n in manifest.count_by_type(m).items():
        assert f"{t}" in printed and str(n) in printed
    noisy = load_coco(out)
    assert noisy.to_coco() == noise.corrupt(raccoon, rate=0.4, seed=3)[0].to_coco()
    assert noise.restore(noisy, m).to_coco() == raccoon.to_coco()
    # chosen types and manifest path; written in another folder, the noisy file still finds its images
    other = tmp_path / "sub" / "n2.json"
    assert main(["corrupt", str(src), "--out", str(other), "--types", "loose,missing", "--manifest",
                 str(tmp_path / "m2.json")]) == 0
    moved = load_coco(other)
    assert moved.image_root == load_coco(src).image_root
    assert all(moved.image_path(f).is_file() for f in moved.images["file_name"])
    assert set(manifest.load_manifest(tmp_path / "m2.json")["type"]) == {"loose", "missing"}
    assert main(["corrupt", str(src), "--out", str(other), "--types", "wrong_class"]) == 2
    assert "wrong_class" in capsys.readouterr().err


def test_spurious_in_crowded_frames_still_below_0_1():
    """Three 100x100 boxes fill three quadrants of a 200x200 frame: only a narrow region is free."""
    images = [{"id": i, "file_name": f"f{i}.png", "width": 200, "height": 200} for i in range(1, 41)]
    anns, k = [], 0
    for i in range(1, 41):
        for x, y in ((0, 0), (100, 0), (0, 100)):
            k += 1
            anns.append({"id": k, "image_id": i, "category_id": 1, "bbox": [float(x), float(y), 100.0, 100.0]})
    clean = Dataset.from_records(images, anns, [{"id": 1, "name": "x"}])
    noisy, m = noise.corrupt(clean, rate=1.0, seed=0, types=["spurious"])
    assert len(m) > 60  # most are placed (retries), crowded or not
    for r in m.itertuples():
        truth = clean.annotations[clean.annotations["image_id"] == r.image_id][["x", "y", "w", "h"]].to_numpy(dtype=float)
        assert iou_matrix(box(noisy, r.annotation_id), truth).max() < 0.1


# -- manifest as CSV, file-level round trips on the synthetic panda set ------------------------------

def test_manifest_csv_round_trip(tmp_path, raccoon):
    clean = raccoon.copy()
    clean.annotations["segmentation"] = [[[1.5, 2.0, 3.25, 4.0]]] * len(clean.annotations)
    noisy, m = noise.corrupt(clean, rate=0.6, seed=9)
    p = manifest.save_manifest(m, tmp_path / "m.csv")
    assert p.read_text().splitlines()[0].startswith("annotation_id,image_id,type,orig_x")
    back = manifest.load_manifest(p)
    pd.testing.assert_frame_equal(back, m)  # floats exact, NaN kept, orig_extra dicts back
    assert noise.restore(noisy, back).to_coco() == noise.canonical(clean).to_coco()
    (tmp_path / "bad.csv").write_text("annotation_id,image_id,type\n1,1,blur\n")
    with pytest.raises(QualmetError, match="bad.csv"):
        manifest.load_manifest(tmp_path / "bad.csv")


@pytest.fixture(scope="module")
def pandas_set(tmp_path_factory):
    from qualmet.synth import generate

    return generate(tmp_path_factory.mktemp("pandas"), n_train=60, n_test=10, seed=3, size=128, workers=1)


def test_files_rebuild_each_other_exactly_and_test_split_untouched(tmp_path, pandas_set):
    train, test = pandas_set["train"], pandas_set["test"]
    test_bytes, test_mtime = test.read_bytes(), test.stat().st_mtime_ns
    before = set(p.name for p in train.parent.iterdir())
    out = tmp_path / "noisy.json"
    assert main(["corrupt", str(train), "--out", str(out), "--rate", "0.5", "--seed", "4",
                 "--manifest", str(tmp_path / "m.csv")]) == 0
    assert test.read_bytes() == test_bytes and test.stat().st_mtime_ns == test_mtime
    assert set(p.name for p in train.parent.iterdir()) == before  # nothing written beside the clean set
    clean, noisy, m = load_coco(train), load_coco(out), manifest.load_manifest(tmp_path / "m.csv")
    # clean + manifest -> the noisy file's bytes; noisy + manifest -> the clean file's bytes
    save_coco(noise.apply(clean, m), tmp_path / "rebuilt.json")
    assert (tmp_path / "rebuilt.json").read_bytes() == out.read_bytes()
    save_coco(noise.restore(noisy, m), tmp_path / "restored.json")
    assert (tmp_path / "restored.json").read_bytes() == train.read_bytes()  # the generator writes ids in order


def test_never_loses_track_of_an_annotation(pandas_set):
    clean = load_coco(pandas_set["train"])
    noisy, m = noise.corrupt(clean, rate=0.8, seed=1)
    ids_clean, ids_noisy = set(clean.annotations["id"]), set(noisy.annotations["id"])
    added = set(m.loc[m["type"].isin(noise.ADDED_TYPES), "annotation_id"])
    deleted = set(m.loc[m["type"] == "missing", "annotation_id"])
    assert ids_noisy == (ids_clean - deleted) | added and not added & ids_clean
    assert len(noisy.annotations) == len(clean.annotations) - len(deleted) + len(added)
    assert set(noisy.annotations["image_id"]) <= set(clean.images["id"])
    # every spurious box lies off the pandas; the type mix is the default one for single-class data
    for r in m[m["type"] == "spurious"].itertuples():
        truth = clean.annotations[clean.annotations["image_id"] == r.image_id][["x", "y", "w", "h"]].to_numpy(dtype=float)
        assert not len(truth) or iou_matrix(box(noisy, r.annotation_id), truth).max() < 0.1
    assert set(m["type"]) == set(manifest.ERROR_TYPES) - {"wrong_class"}


def test_noise_does_not_depend_on_the_order_of_images_or_types(raccoon):
    shuffled = replace(raccoon, images=raccoon.images.iloc[::-1].reset_index(drop=True))
    a, _ = noise.corrupt(raccoon, rate=0.3, seed=7, types=["spurious", "loose"])
    b, _ = noise.corrupt(shuffled, rate=0.3, seed=7, types=["loose", "spurious"])
    assert a.annotations.equals(b.annotations)
    c, _ = noise.corrupt(raccoon, rate=0.3, seed=7, types=["missing", "loose"], shares=[1, 2])
    d, _ = noise.corrupt(raccoon, rate=0.3, seed=7, types=["loose", "missing"], shares={"missing": 1, "loose": 2})
    assert c.annotations.equals(d.annotations)


def test_restore_refuses_a_manifest_of_another_set(raccoon):
    noisy, m = noise.corrupt(raccoon, rate=0.3, seed=2, types=["loose", "missing"])
    with pytest.raises(QualmetError, match="recorded as deleted .* but .* has it"):
        noise.restore(raccoon, m)  # the clean set by mistake: re-adding the deleted boxes would duplicate ids
    other, _ = noise.corrupt(raccoon, rate=0.3, seed=3, types=["loose"])
    with pytest.raises(QualmetError, match="the manifest belongs to another noisy set"):
        noise.restore(other, m[m["type"] == "loose"])
    assert noise.restore(noisy, m).to_coco() == raccoon.to_coco()


def test_manifest_ids_must_be_integers(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('[{"annotation_id": "abc", "image_id": 1, "type": "loose"}]')
    with pytest.raises(QualmetError, match="manifest row 0: annotation_id must be an integer, got 'abc'"):
        manifest.load_manifest(p)
    p.write_text('[{"annotation_id": 1, "image_id": 1e23, "type": "loose"}]')
    with pytest.raises(QualmetError, match="image_id must be an integer"):
        manifest.load_manifest(p)


def test_cli_corrupt_never_overwrites_its_input_or_output_with_the_manifest(tmp_path, raccoon, capsys):
    src = tmp_path / "clean.json"
    save_coco(raccoon, src)
    before = src.read_bytes()
    assert main(["corrupt", str(src), "--out", str(tmp_path / "n.json"), "--manifest", str(src)]) == 2
    assert "would overwrite the clean data set" in capsys.readouterr().err and src.read_bytes() == before
    assert main(["corrupt", str(src), "--out", str(tmp_path / "n.json"), "--manifest", str(tmp_path / "n.json")]) == 2
    assert "would overwrite the noisy data set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: usage line and exit 2, like any bad option
        main(["corrupt", str(src), "--out", str(tmp_path / "n.json"), "--seed", "-1"])
    assert stop.value.code == 2 and "a seed must not be negative" in capsys.readouterr().err
    (tmp_path / "blocked").write_text("a file where a folder must be")
    assert main(["corrupt", str(src), "--out", str(tmp_path / "blocked" / "n.json"),
                 "--manifest", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()  # the manifest is not left without its noisy set
    assert not (tmp_path / "n.json").exists()
