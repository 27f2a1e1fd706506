"""Resume: a step is done only when its stamp matches its configuration and its files exist; the data
set hash ignores row order and sees every change a training would see."""
from __future__ import annotations


import pandas as pd

from qualmet import steps
from qualmet.dataset import Dataset


def _ds(rows, crowd=None) -> Dataset:
    anns = pd.DataFrame(rows, columns=["id", "image_id", "category_id", "x", "y", "w", "h"])
    anns = anns.astype({c: float for c in "xywh"})
    if crowd is not None:
        anns["iscrowd"] = crowd
    images = pd.DataFrame({"id": [1, 2], "file_name": ["a.jpg", "b.jpg"], "width": [64, 64], "height": [48, 48]})
    cats = pd.DataFrame({"id": [1, 2], "name": ["cat", "dog"]})
    return Dataset(images=images, annotations=anns, categories=cats)


ROWS = [(1, 1, 1, 1, 2, 10, 10), (2, 1, 2, 20, 5, 8, 9), (3, 2, 1, 3, 3, 30, 20)]


def test_a_step_is_done_only_with_its_stamp_and_files(tmp_path):
    cfg = {"data": {"train": 40}, "seed": 0}
    out = tmp_path / "step"
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert not steps.done(out, cfg, [out / "result.json"])  # no stamp yet: not done
    steps.stamp(out, cfg)
    assert steps.done(out, cfg, [out / "result.json"])
    assert steps.done(out, {"seed": 0, "data": {"train": 40}}, [out / "result.json"])  # key order does not matter
    assert not steps.done(out, {**cfg, "seed": 1}, [out / "result.json"])  # another configuration
    assert not steps.done(out, cfg, [out / "result.json", out / "model.pt"])  # a file is missing
    (out / steps.STAMP).write_text("{not json")
    assert not steps.done(out, cfg)  # a damaged stamp is redone, not an error
    assert steps.fingerprint(cfg) == steps.fingerprint(dict(reversed(list(cfg.items()))))


def test_the_data_set_hash_ignores_order_and_sees_every_change():
    base = steps.dataset_hash(_ds(ROWS))
    assert steps.dataset_hash(_ds(list(reversed(ROWS)))) == base
    moved = [ROWS[0], (2, 1, 2, 21, 5, 8, 9), ROWS[2]]
    relabelled = [ROWS[0], (2, 1, 1, 20, 5, 8, 9), ROWS[2]]
    assert len({base, steps.dataset_hash(_ds(moved)), steps.dataset_hash(_ds(relabelled))}) == 3
    # a box turned into an ignore region changes it; an all-zero iscrowd column does not
    assert steps.dataset_hash(_ds(ROWS, crowd=[0, 0, 0])) == base
    assert steps.dataset_hash(_ds(ROWS, crowd=[0, 1, 0])) != base
