"""cleanlab's ObjectLab as a metric plugin (qualmet/objectlab_metrics.py, entry point ``objectlab``).

With cleanlab installed: the four metrics are in the registry, find planted errors, and equal
cleanlab's own functions called on the same inputs. Without it (hidden here, or simply absent): the
entry point loads, registers nothing and warns about nothing.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

import qualmet
from qualmet import discovery, plugin
from qualmet.cli import main
from qualmet.discovery import load_registry

NAMES = ["objectlab_quality", "objectlab_overlooked", "objectlab_badloc", "objectlab_swap"]
MODULE = "qualmet.objectlab_metrics"
needs_cleanlab = pytest.mark.skipif(importlib.util.find_spec("cleanlab") is None,
                                    reason="cleanlab is not installed (pip install 'qualmet[objectlab]')")
SWAPPED, SHIFTED, MISSING_FRAME, NO_PREDICTIONS, EMPTY = (2, 0), (4, 1), 6, 9, 10


def truth_and_labels():
    """10 frames of 200x150 with three boxes each (classes 1, 2, 3, in separate thirds of the frame).
    Returns (true boxes per frame, the labels per frame) as lists of (category_id, [x, y, w, h]); the
    labels carry the planted faults: frame 2 box 0 has the wrong class, frame 4 box 1 is shifted right
    by 40% of its width, frame 6 box 2 is not labelled, frame 10 has no box at all."""
    rng = np.random.default_rng(7)
    truth, labels = {}, {}
    for i in range(1, 11):
        boxes = []
        for j in range(3):
            w, h = rng.uniform(25, 40), rng.uniform(25, 40)
            x, y = 66 * j + rng.uniform(2, 66 - w - 2), rng.uniform(5, 150 - h - 5)
            boxes.append((j + 1, [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]))
        truth[i] = boxes if i != EMPTY else []
        labels[i] = [(c, list(b)) for c, b in truth[i]]
    f, j = SWAPPED
    labels[f][j] = (labels[f][j][0] % 3 + 1, labels[f][j][1])
    f, j = SHIFTED
    labels[f][j][1][0] += 0.4 * labels[f][j][1][2]
    del labels[MISSING_FRAME][2]
    return truth, labels


def predictions_for(truth):
    """A detector that finds every true box (1 px jitter, scores 0.96-0.995) plus one low-score false
    positive a frame; nothing at all for the frame without predictions."""
    rng = np.random.default_rng(8)
    out = []
    for i, boxes in truth.items():
        if i == NO_PREDICTIONS:
            continue
        for c, (x, y, w, h) in boxes:
            out.append({"image_id": i, "category_id": c, "score": float(rng.uniform(0.96, 0.995)),
                        "bbox": [x + rng.uniform(-1, 1), y + rng.uniform(-1, 1), w + rng.uniform(-1, 1), h]})
        out.append({"image_id": i, "category_id": 1 + i % 3, "score": float(rng.uniform(0.2, 0.4)),
                    "bbox": [150.0, 120.0, 20.0, 20.0]})
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectlab")
    truth, labels = truth_and_labels()
    images = [{"id": i, "file_name": f"f{i}.png", "width": 200, "height": 150} for i in labels]
    anns, ids = [], {}
    for i, boxes in labels.items():
        for j, (c, b) in enumerate(boxes):
            ids[(i, j)] = len(anns) + 1
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
                         "iscrowd": 0})
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    (root / "data.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    preds = predictions_for(truth)
    (root / "preds.json").write_text(json.dumps(preds))
    return {"root": root, "labels": labels, "preds": preds, "ids": ids}


def direct_cleanlab(labels, preds):
    """cleanlab called directly on the same labels and predictions, converted here independently of
    the plugin: class c is index c - 1, frames in id order, boxes in the order they were written."""
    from cleanlab.object_detection import rank

    lab, prd = [], []
    for i in sorted(labels):
        xyxy = [[x, y, x + w, y + h] for _, (x, y, w, h) in labels[i]]
        lab.append({"bboxes": np.array(xyxy, float).reshape(-1, 4), "labels": np.array([c - 1 for c, _ in labels[i]], int)})
        mine = [p for p in preds if p["image_id"] == i]
        prd.append([np.array([[p["bbox"][0], p["bbox"][1], p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3],
                               p["score"]] for p in mine if p["category_id"] == c], float).reshape(-1, 5) for c in (1, 2, 3)])
    return {"quality": rank.get_label_quality_scores(lab, prd, verbose=False),
            "overlooked": rank.pool_box_scores_per_image(rank.compute_overlooked_box_scores(labels=lab, predictions=prd)),
            "badloc": np.concatenate(rank.compute_badloc_box_scores(labels=lab, predictions=prd)),
            "swap": np.concatenate(rank.compute_swap_box_scores(labels=lab, predictions=prd))}


@pytest.fixture(scope="module")
def run(planted):
    return qualmet.run_metrics(planted["root"] / "data.json", predictions=planted["root"] / "preds.json",
                               metrics=NAMES, workers=1, progress=False)


def test_entry_point_is_declared():
    eps = {ep.name: ep.value for ep in entry_points(group="qualmet.metrics")}
    assert eps.get("objectlab") == MODULE, f"reinstall qualmet (pip install -e .) to pick up its entry points: {eps}"


def test_without_cleanlab_nothing_is_registered_and_nothing_warns(monkeypatch, capsys):
    original = importlib.import_module(MODULE)  # the real state, put back after the test
    monkeypatch.setattr(qualmet, "objectlab_metrics", original)  # a fresh import rebinds it
    monkeypatch.setattr(discovery, "_CACHE", {})  # nor may the cleanlab-less registry outlive the test
    monkeypatch.delitem(sys.modules, MODULE)  # the entry point imports the module afresh
    monkeypatch.delitem(plugin._DEFINED, MODULE, raising=False)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # `import cleanlab` now fails, as when it is absent
    reg = load_registry()
    assert not [n for n in reg.metrics if n.startswith("objectlab")]
    assert not [p for p in reg.problems if "objectlab" in p], reg.problems
    assert sys.modules[MODULE].CLEANLAB is None and "confidence" in reg.metrics
    assert main(["metrics", "list"]) == 0
    out, err = capsys.readouterr()
    assert "objectlab" not in out and "warning" not in err.lower() and "warning" not in out.lower()


@needs_cleanlab
def test_registered_with_cleanlab():
    reg = load_registry()
    assert not reg.problems
    for name in NAMES:
        s = reg.metrics[name]
        assert (s.level, s.worse, s.vectorised, set(s.needs)) == (
            "frame" if name in NAMES[:2] else "object", "low", True, {"predictions"})
        assert s.source.startswith("entry point 'objectlab'") and "cleanlab" in s.version


@needs_cleanlab
def test_planted_errors_score_lowest_of_their_kind(run, planted):
    obj = run.objects.set_index("annotation_id")
    fr = run.frames.set_index("image_id")
    swapped, shifted = planted["ids"][SWAPPED], planted["ids"][SHIFTED]
    assert obj["objectlab_swap"].idxmin() == swapped
    assert obj["objectlab_swap"][swapped] < 0.1 and obj["objectlab_swap"].drop(swapped).min() > 0.9
    assert obj["objectlab_badloc"].idxmin() == shifted
    assert obj["objectlab_badloc"][shifted] < 0.6 and obj["objectlab_badloc"].drop(shifted).min() > 0.8
    assert fr["objectlab_overlooked"].idxmin() == MISSING_FRAME
    assert fr["objectlab_overlooked"][MISSING_FRAME] < 0.01 and fr["objectlab_overlooked"].drop(MISSING_FRAME).min() == 1.0
    worst = fr["objectlab_quality"].sort_values().index[:3]
    assert set(worst) == {SWAPPED[0], SHIFTED[0], MISSING_FRAME}
    # no prediction at all: ObjectLab has no evidence against the frame's boxes
    assert (obj.loc[obj["image_id"] == NO_PREDICTIONS, ["objectlab_badloc", "objectlab_swap"]] == 1.0).all().all()
    assert not obj[["objectlab_badloc", "objectlab_swap"]].isna().any().any() and not fr[NAMES[:2]].isna().any().any()


@needs_cleanlab
def test_values_equal_cleanlab_called_directly(run, planted):
    from cleanlab.object_detection.rank import issues_from_scores

    want = direct_cleanlab(planted["labels"], planted["preds"])
    fr = run.frames.sort_values("image_id")
    obj = run.objects.sort_values("annotation_id")  # ids were given in the order the direct call reads boxes
    np.testing.assert_allclose(fr["objectlab_quality"], want["quality"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fr["objectlab_overlooked"], want["overlooked"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(obj["objectlab_badloc"], want["badloc"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(obj["objectlab_swap"], want["swap"], rtol=0, atol=1e-12)
    # cleanlab's own issue list (frames at or below 0.1, worst first) read from the metric
    flagged = fr["image_id"].to_numpy()[issues_from_scores(fr["objectlab_quality"].to_numpy())]
    assert list(flagged) == list(fr.sort_values("objectlab_quality")["image_id"][:len(flagged)])


@needs_cleanlab
def test_rows_follow_the_annotations_table_not_its_ids(planted):
    """Vectorised metrics return values in the table's row order: shuffled rows, unsorted image ids
    and a frame missing from ``images`` must not move a value to another box."""
    mod = importlib.import_module(MODULE)
    ds = qualmet.load_coco(planted["root"] / "data.json")
    preds = qualmet.load_predictions(planted["root"] / "preds.json", ds.images)
    a = ds.annotations.reset_index(drop=True)
    base = {n: mod.METRICS[n][0](a, ds.images, preds) for n in NAMES}
    perm = np.random.default_rng(3).permutation(len(a))
    shuffled = a.iloc[perm].reset_index(drop=True)
    images = ds.images.iloc[::-1].reset_index(drop=True)
    for n in ("objectlab_badloc", "objectlab_swap"):
        np.testing.assert_array_equal(mod.METRICS[n][0](shuffled, images, preds), np.asarray(base[n])[perm])
    q = mod.objectlab_quality(shuffled, images, preds)
    np.testing.assert_array_equal(q.sort_index().to_numpy(), base["objectlab_quality"].sort_index().to_numpy())
    fewer = images[images["id"] != 1]
    v = mod.objectlab_badloc(a, fewer, preds)
    assert np.isnan(v[a["image_id"].to_numpy() == 1]).all() and not np.isnan(v[a["image_id"].to_numpy() != 1]).any()
