"""The process-wide frame cache and the thread setting: frames decoded once across trainings and
predictions, re-decoded when the file changes, bounded in bytes; training results bitwise the same
whether frames come from disk or from the cache, and the caller's torch thread count restored."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from qualmet.detector.data import FRAMES, DetectionData, FrameCache
from qualmet.detector.train import train
from qualmet.errors import ImageError, QualmetError
from qualmet.formats import load_coco

from .detector_helpers import ellipses


def test_frame_cache_shares_frames_and_notices_a_rewritten_file(tmp_path):
    data = ellipses(tmp_path / "d", 3, 64, seed=1)
    ds = load_coco(data)
    cache = FrameCache()
    a = DetectionData(ds, 48)
    a._cache = cache
    b = DetectionData(ds.subset([2, 3]), 48)  # another arm's subset of the same files
    b._cache = cache
    first = [a.frame(i)[0] for i in range(3)]
    assert (cache.misses, cache.hits) == (3, 0)
    assert b.frame(0)[0] is first[1] and cache.misses == 3  # frame 2 of the set, decoded once
    nocache = DetectionData(ds, 48, cache=False)
    np.testing.assert_array_equal(nocache.frame(1)[0], first[1])

    path = ds.image_path(ds.images["file_name"].iloc[1])
    img = cv2.imread(str(path))
    cv2.imwrite(str(path), 255 - img)  # same size and name, other pixels
    again = a.frame(1)[0]
    assert cache.misses == 4 and not np.array_equal(again, first[1])
    np.testing.assert_array_equal(again, DetectionData(ds, 48, cache=False).frame(1)[0])


def test_frame_cache_is_bounded_and_a_missing_file_names_itself(tmp_path):
    data = ellipses(tmp_path / "d", 4, 64, seed=2)
    ds = load_coco(data)
    one = 48 * 48 * 3
    cache = FrameCache(limit_bytes=2 * one)
    for f in ds.images["file_name"]:
        cache.get(ds.image_path(f), 48)
    assert len(cache) == 2 and cache.nbytes == 2 * one
    cache.get(ds.image_path(ds.images["file_name"].iloc[3]), 48)  # the most recent stayed
    assert cache.hits == 1
    with pytest.raises(ImageError, match="nope.png: image file not found"):
        cache.get(tmp_path / "nope.png", 48)


@pytest.mark.slow
def test_training_from_cached_frames_is_bitwise_the_same(tmp_path):
    data = ellipses(tmp_path / "data", 8, 96, seed=4)
    kw = dict(val_fraction=0.25, iters=4, seed=1, device="cpu", input_size=96, batch_size=4, eval_every=2,
              checkpoint_every=2, bn_recalib_images=8, progress=False)
    FRAMES.clear()
    cold = train(data, tmp_path / "cold", **kw)
    misses = FRAMES.misses
    assert misses == 8
    warm = train(data, tmp_path / "warm", **kw)
    assert FRAMES.misses == misses and FRAMES.hits > 0  # the second training decoded nothing
    a, b = cold.predictor.model.state_dict(), warm.predictor.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    test = load_coco(data)
    p1, p2 = cold.predictor.predict_dataset(test), warm.predictor.predict_dataset(test)
    assert FRAMES.misses == misses
    assert len(p1) and p1.equals(p2)


@pytest.mark.slow
def test_threads_are_set_for_the_training_and_restored(tmp_path, caplog):
    data = ellipses(tmp_path / "data", 6, 64, seed=5)
    kw = dict(val_fraction=0.0, iters=2, seed=0, device="cpu", input_size=64, batch_size=2, bn_recalib_images=4,
              progress=False)
    before = torch.get_num_threads()
    seen = []
    with caplog.at_level(logging.INFO, logger="qualmet"):
        res = train(data, tmp_path / "one", threads=1, callback=lambda it, info: seen.append(torch.get_num_threads()),
                    **kw)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter 2:")]
    assert len(lines) == 1 and "train loss" in lines[0] and "val" not in lines[0]  # no val split: no nan columns
    assert seen == [1, 1] and torch.get_num_threads() == before
    assert res.predictor.recipe.threads == 1
    again = train(data, tmp_path / "one_again", threads=1, **kw)
    a, b = res.predictor.model.state_dict(), again.predictor.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(QualmetError, match=r"threads must be at least 0 \(0: torch.s default\), got -1"):
        train(data, tmp_path / "bad", threads=-1, **kw)
