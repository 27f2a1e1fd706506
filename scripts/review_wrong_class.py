"""How the review queue's "wrong class" kind does on a real multi-class data set: swap the class of a
share of the boxes (qualmet's noise injector, ``wrong_class`` only), then rank the review queue with
out-of-fold predictions and count the swapped boxes among the "wrong class" issues.

    .venv/bin/python scripts/review_wrong_class.py POOL.json PREDS_OOF.json OUT_DIR [--rate 0.05] [--seeds 0 1 2]

The predictions are the pool's out-of-fold predictions from models trained on its *unswapped* labels
(e.g. ``experiments/results/bccd_real_noise/oof/preds_oof.json`` for BCCD's trainval pool): a model
trained on the swapped labels would be somewhat weaker, so the figures are an upper bound for the rule
at this detector's quality. Boxes the data set's own labels already have in the wrong class count as
false positives here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from qualmet.atomic import write_text
from qualmet.formats import load_coco, load_predictions
from qualmet.label_errors import review_against_manifest
from qualmet.noise import corrupt
from qualmet.review import build_review
from qualmet.runner import run_metrics

METRICS = ["confidence", "missed_by_labels", "max_iou_other", "box_tightness_iou", "aspect_ratio", "area_relative"]


def one_seed(pool, preds_path: Path, rate: float, seed: int) -> dict:
    noisy, manifest = corrupt(pool, rate=rate, seed=seed, types=["wrong_class"])
    preds = load_predictions(preds_path, noisy)
    run = run_metrics(noisy, predictions=preds, metrics=METRICS, workers=1)
    issues = build_review(noisy, run, preds).issues
    wc = issues[issues["kind"] == "wrong class"]
    swapped = set(manifest["annotation_id"].astype(int))
    hits = wc["annotation_id"].astype(int).isin(swapped)
    prec, rec = review_against_manifest(issues, manifest)
    p = prec.set_index("kind").loc["wrong class"]
    return {"seed": seed, "swapped": len(swapped), "wrong_class_issues": len(wc), "right": int(hits.sum()),
            "precision_all": round(float(hits.mean()), 3) if len(wc) else float("nan"),
            "precision@10": p["precision@10"], "precision@30": p["precision@30"], "precision@100": p["precision@100"],
            "recall": round(int(hits.sum()) / len(swapped), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pool")
    ap.add_argument("predictions")
    ap.add_argument("out")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    pool = load_coco(a.pool)
    rows = pd.DataFrame([one_seed(pool, Path(a.predictions), a.rate, s) for s in a.seeds])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "wrong_class.csv", rows.to_csv(index=False))
    text = (f"# The review queue's \"wrong class\" kind on {a.pool}\n\n{len(pool.images)} frames, "
            f"{len(pool.annotations)} boxes; {a.rate:.0%} of the boxes given another class per seed; "
            f"out-of-fold predictions {a.predictions}.\n\n```\n{rows.to_string(index=False)}\n```\n")
    write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
