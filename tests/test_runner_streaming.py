"""The metric runner streams: chunk tasks are built only as the executor takes them (bounded in
flight), results are put into the output tables as they arrive, and rows land on the right
annotations whatever the order of the annotations table."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from qualmet.formats import load_coco
from qualmet.executors import LocalExecutor, SerialExecutor
from qualmet.runner import run_metrics

from .metric_helpers import write_dataset

METRICS = ["brightness", "black_white_ratio", "class_color_consistency", "aspect_ratio", "max_iou_other"]


class Counting:
    """Wraps an executor; records how many tasks had been taken from the iterator whenever a result comes back."""

    def __init__(self, inner):
        self.inner = inner
        self.taken = 0
        self.lead: list[int] = []  # tasks taken but not yet given back, at each result
        self.kind = None

    def map_unordered(self, fn, tasks):
        self.kind = type(tasks)

        def counted():
            for t in tasks:
                self.taken += 1
                yield t

        for i, out in enumerate(self.inner.map_unordered(fn, counted()), start=1):
            self.lead.append(self.taken - (i - 1))
            yield out

    def close(self, cancel=False):
        self.inner.close(cancel)


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "ds", n=6)


@pytest.mark.parametrize("make, bound", [(lambda: SerialExecutor(), 1), (lambda: LocalExecutor(1), 2)])
def test_tasks_are_pulled_lazily_and_bounded(data, make, bound):
    ex = Counting(make())
    run = run_metrics(data, metrics=METRICS, workers=1, chunk_size=1, executor=ex, progress=False)
    assert not issubclass(ex.kind, (list, tuple))  # a generator, not a prebuilt list
    assert ex.taken == 6 and len(ex.lead) == 6
    assert max(ex.lead) <= bound, ex.lead  # never more than the executor's window built at once
    ref = run_metrics(data, metrics=METRICS, workers=1, progress=False)
    pd.testing.assert_frame_equal(run.objects, ref.objects)
    pd.testing.assert_frame_equal(run.frames, ref.frames)


def test_rows_follow_the_annotations_whatever_their_order(data, tmp_path):
    ds = load_coco(data)
    ref = run_metrics(ds, metrics=METRICS, workers=1, chunk_size=2, progress=False)
    order = np.random.default_rng(0).permutation(len(ds.annotations))
    shuffled = replace(ds, annotations=ds.annotations.iloc[order].reset_index(drop=True))
    out = tmp_path / "run"
    for _ in range(2):  # computed, then every chunk from the cache
        run = run_metrics(shuffled, metrics=METRICS, workers=1, chunk_size=2, progress=False, out=out)
        assert list(run.objects["annotation_id"]) == list(shuffled.annotations["id"])  # table order kept
        got = run.objects.sort_values("annotation_id").reset_index(drop=True)
        want = ref.objects.sort_values("annotation_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
        pd.testing.assert_frame_equal(run.frames, ref.frames)
    assert run.info["counters"]["chunks_computed"] == 0
    assert ref.objects["class_color_consistency"].notna().sum() >= 2  # the finalize metric did get its vectors
