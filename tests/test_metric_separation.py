"""On the synthetic noisy set, each seed metric separates its own error type from clean boxes (AUROC).

Needs qualmet.synth (generator) and qualmet.noise (noise injector), written by another engineer;
skipped with a reason until they exist. Prints the full AUROC table (metric x error type).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from qualmet.discovery import load_registry
from qualmet.stats import auroc

synth = pytest.importorskip("qualmet.synth", reason="qualmet.synth (synthetic generator) is not written yet")
noise = pytest.importorskip("qualmet.noise", reason="qualmet.noise (noise injector) is not written yet")

# metric -> error-type name fragments it must separate from clean boxes, with the AUROC floor
EXPECTED = {
    # The reference contour-aspect tightness is weak on loose boxes (AUROC ~0.6 here: a loose box that
    # grows on all sides keeps its aspect ratio); it does catch spurious and squashed boxes. The
    # IoU-based variant is the one that finds loose and shifted boxes.
    "box_tightness": [("spurious", 0.75), ("squash", 0.6)],
    "box_tightness_iou": [("loose", 0.8), ("shift", 0.85), ("spurious", 0.85)],
    "max_iou_other": [("dup", 0.9)],
    "object_proximity": [("dup", 0.7)],
    "black_white_ratio": [("loose", 0.9), ("shift", 0.9), ("spurious", 0.85)],
}


def test_seed_metrics_separate_their_error_types(tmp_path):
    from qualmet.runner import run_metrics

    synth.generate(tmp_path / "synth", n_train=150, n_test=0, seed=0, size=(320, 240))
    import qualmet

    ds = qualmet.load_coco(tmp_path / "synth" / "train.json")
    noisy, manifest = noise.corrupt(ds, rate=0.3, seed=0)
    run = run_metrics(noisy, workers=2, progress=False)
    reg = load_registry()
    objs = run.objects
    bad_type = manifest.drop_duplicates("annotation_id").set_index("annotation_id")["type"]
    kind = objs["annotation_id"].map(bad_type)
    clean = kind.isna()
    rows = []
    for m in [c for c in objs.columns if c in reg]:
        susp = objs[m] if reg[m].worse == "high" else -objs[m]
        for t in sorted(kind.dropna().unique()):
            sel = clean | (kind == t)
            rows.append({"metric": m, "type": t, "n": int((kind == t).sum()),
                         "auroc": auroc(susp[sel].to_numpy(), (kind[sel] == t).to_numpy())})
    table = pd.DataFrame(rows).pivot(index="metric", columns="type", values="auroc")
    print("\nAUROC (suspicion oriented by 'worse'; positives: boxes of that error type, negatives: clean boxes)")
    print(table.round(3).to_string())
    for m, pairs in EXPECTED.items():
        for frag, floor in pairs:
            types = [t for t in table.columns if frag in str(t).lower()]
            assert types, f"no error type matching {frag!r} in the manifest: {list(table.columns)}"
            for t in types:
                assert table.loc[m, t] > floor, f"{m} vs {t}: AUROC {table.loc[m, t]:.3f} <= {floor}"

    # aspect_ratio is oriented one way (worse="high": wide boxes), but a squash narrows or widens a
    # box, in width or in height; as used for stratifying (bins), its distance from the typical
    # aspect ratio of all boxes separates squashed boxes
    log_ar = objs["aspect_ratio"].map(math.log)
    dev = (log_ar - log_ar.median()).abs()
    sel = clean | (kind == "squash")
    a = auroc(dev[sel].to_numpy(), (kind[sel] == "squash").to_numpy())
    print(f"aspect_ratio, |log(w/h) - median| vs squash: AUROC {a:.3f}")
    assert a > 0.65

    # object_count (frame level, worse="high"): frames given an extra box (duplicate, spurious) vs
    # frames no error touched
    touched = set(manifest["image_id"])
    extra = set(manifest.loc[manifest["type"].isin(["duplicate", "spurious"]), "image_id"])
    f = run.frames[run.frames["image_id"].isin(extra) | ~run.frames["image_id"].isin(touched)]
    a = auroc(f["object_count"].to_numpy(), f["image_id"].isin(extra).to_numpy())
    print(f"object_count, frames with an extra box ({len(extra)}) vs untouched frames: AUROC {a:.3f}")
    assert a > 0.75
    # confidence and missed_by_labels need a model's predictions: their AUROC (out-of-fold SSDlite
    # predictions) is measured in benchmarks/bench_objectlab.py, docs/objectlab.md
