"""The FiftyOne bridge: a metrics run onto FiftyOne detections and samples through FiftyOne's own COCO functions,
and FiftyOne fields back into a qualmet metrics run, with identical tables."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qualmet.errors import QualmetError
from qualmet.fiftyone_bridge import from_fiftyone, metrics_coco, to_fiftyone, write_metrics_coco
from qualmet.formats import load_coco
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset

METRICS = ["aspect_ratio", "object_proximity", "max_iou_other", "object_count", "brightness"]


@pytest.fixture
def run(tmp_path):
    data = write_dataset(tmp_path / "ds", n=5)
    run_metrics(data, metrics=METRICS, out=tmp_path / "run", workers=1, progress=False)
    return data, tmp_path / "run"


def _tables(d):
    return pd.read_parquet(d / "objects.parquet"), pd.read_parquet(d / "frames.parquet")


def _samples(coco: dict, images) -> list[dict]:
    """Plain-dict samples as FiftyOne's COCO importer makes them (``extra_attrs``, ``coco_id``)."""
    samples = []
    for im in coco["images"]:
        dets = [{"label": "x", "bounding_box": [0, 0, 0, 0], "coco_id": a["id"],
                 **{k: v for k, v in a.items() if k.startswith("qualmet_")}}
                for a in coco["annotations"] if a["image_id"] == im["id"]]
        samples.append({"filepath": str(images / im["file_name"]), "ground_truth": {"detections": dets},
                        **{k: v for k, v in im.items() if k.startswith("qualmet_")}})
    return samples


def test_plain_samples_read_back_as_the_same_run(run, tmp_path):
    """Without FiftyOne: samples as plain dicts (what a FiftyOne sample's fields hold) give the run back."""
    data, run_dir = run
    coco = metrics_coco(run_dir, data)
    objects, frames = _tables(run_dir)
    assert np.isnan(objects["object_proximity"]).any()  # NaN survives as null, and back
    samples = _samples(coco, tmp_path / "ds" / "images")
    json.loads(json.dumps(samples))  # plain data: nothing but JSON types
    back = from_fiftyone(samples, data, out=tmp_path / "back")
    o, f = _tables(tmp_path / "back")
    pd.testing.assert_frame_equal(o[objects.columns], objects)
    pd.testing.assert_frame_equal(f[frames.columns], frames)
    assert {m["name"]: m["level"] for m in back.info["metrics"]} == {
        "aspect_ratio": "object", "max_iou_other": "object", "object_proximity": "object",
        "brightness": "frame", "object_count": "frame"}
    from qualmet.commands.experiment import _load_run  # what `qualmet select --run` reads

    loaded = _load_run(str(tmp_path / "back"), load_coco(data), str(data))
    assert set(loaded.specs) == set(METRICS) and loaded.level("brightness") == "frame"
    samples[0]["filepath"] = "/elsewhere/other.png"
    with pytest.raises(QualmetError, match="other.png: is not an image of the data set"):
        from_fiftyone(samples, data)


def test_round_trip_through_fiftyones_coco_functions(run, tmp_path):
    fouc = pytest.importorskip("fiftyone.utils.coco",
                               reason="fiftyone is optional and not installed (it needs OpenCV < 5, qualmet pins 5.x: "
                                      "run this test in an environment with fiftyone); its COCO functions are "
                                      "what this test runs")
    data, run_dir = run
    labels = write_metrics_coco(run_dir, data, tmp_path / "fo.json")
    # FiftyOne's own COCO file parsing, as its COCODetectionDataset importer does with extra_attrs=True
    _, classes_map, supercats, images, anns = fouc.load_coco_detection_annotations(labels, extra_attrs=True)
    import fiftyone.core.labels as fol

    samples = []
    for iid, im in images.items():
        dets = [o.to_detection((im["width"], im["height"]), classes_map, supercats, include_id=True)
                for o in (anns or {}).get(iid, [])]
        samples.append({"filepath": str(tmp_path / "ds" / "images" / im["file_name"]),
                        "ground_truth": fol.Detections(detections=dets),
                        **{k: v for k, v in im.items() if k.startswith("qualmet_")}})
    bridged = to_fiftyone(run_dir, data)
    assert [len(s["ground_truth"].detections) for s in bridged] == [len(s["ground_truth"].detections) for s in samples]
    objects, frames = _tables(run_dir)
    from_fiftyone(samples, data, out=tmp_path / "back")
    o, f = _tables(tmp_path / "back")
    pd.testing.assert_frame_equal(o[objects.columns], objects)
    pd.testing.assert_frame_equal(f[frames.columns], frames)
    # Brain-like fields, and detections without coco_id (matched by class and box)
    rng = np.random.default_rng(0)
    for s in bridged:
        s["uniqueness"] = float(rng.random())
        for d in s["ground_truth"].detections:
            d["mistakenness"] = float(rng.random())
            d["coco_id"] = None
    brain = from_fiftyone(bridged, data, object_fields=["mistakenness"], frame_fields=["uniqueness"],
                          worse={"mistakenness": "high"})
    want = {}
    ds = load_coco(data)
    for s in bridged:
        fn = s["filepath"].rsplit("/", 1)[-1]
        iid = int(ds.images.loc[ds.images["file_name"] == fn, "id"].item())
        a = ds.annotations[ds.annotations["image_id"] == iid]
        w, h = (int(v) for v in ds.images.set_index("id").loc[iid, ["width", "height"]])
        for d in s["ground_truth"].detections:  # the box each detection was made from, found independently
            box = np.asarray(d.bounding_box) * [w, h, w, h]
            k = int(np.argmin(np.abs(a[["x", "y", "w", "h"]].to_numpy() - box).sum(axis=1)))
            want[int(a["id"].iat[k])] = d["mistakenness"]
    assert brain.objects.set_index("annotation_id")["mistakenness"].to_dict() == want
    assert {m["name"]: m["worse"] for m in brain.info["metrics"]} == {"mistakenness": "high", "uniqueness": "low"}
    assert brain.frames["uniqueness"].tolist() == [s["uniqueness"] for s in bridged]


def test_qualmet_export_fiftyone_puts_metrics_and_the_review_queue_on_every_annotation(run, tmp_path, capsys):
    from qualmet.cli import main

    data, run_dir = run
    assert main(["review", str(data), "--run", str(run_dir), "--out", str(tmp_path / "review")]) in (0, 1)
    assert main(["export", "fiftyone", str(data), "--run", str(run_dir), "--review", str(tmp_path / "review"),
                 "--out", str(tmp_path / "fo.json")]) == 0
    assert "fo.Dataset.from_dir(" in capsys.readouterr().out
    coco = json.loads((tmp_path / "fo.json").read_text())
    objects, frames = _tables(run_dir)
    by_id = {a["id"]: a for a in coco["annotations"]}
    assert set(by_id) == set(objects["annotation_id"])
    for r in objects.itertuples(index=False):
        got = by_id[r.annotation_id]["qualmet_aspect_ratio"]
        assert got == pytest.approx(r.aspect_ratio)
    queue = load_coco(tmp_path / "review" / "review.json").annotations.set_index("id")
    for i, a in by_id.items():
        assert a["qualmet_score"] == pytest.approx(queue.loc[i, "qualmet_score"])
        assert a["qualmet_issue"] == queue.loc[i, "qualmet_issue"]
    assert all("qualmet_brightness" in im for im in coco["images"])
    back = from_fiftyone(_samples(coco, tmp_path / "ds" / "images"), data)  # the queue's fields are not metrics
    pd.testing.assert_frame_equal(back.objects[objects.columns], objects)
    assert set(back.specs) == set(METRICS)
    other = write_dataset(tmp_path / "other", n=7)  # a review of other labels is refused
    assert main(["export", "fiftyone", str(other), "--run", str(run_dir), "--review", str(tmp_path / "review"),
                 "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()
