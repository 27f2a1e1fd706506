"""How the review queue's model-based kinds do on real label noise: BCCD's 40 relabelled test frames.

BCCD's own labels miss about half the red cells; ``relabelled_test/`` holds an independent relabelling
of 40 test frames. A model trained on the training pool (never on these frames) predicts them; the
review queue of the 40 frames with their *original* labels then suggests missing boxes and wrong
classes, and each suggestion is checked against the relabelling:

- a "missing box" suggestion is right when it overlaps (IoU >= 0.5) a relabelled box that no original
  box overlaps (IoU >= 0.5): a cell the original labels miss;
- a "wrong class" issue is right when the original box's best relabelled match (IoU >= 0.5) has
  another class.

    .venv/bin/python scripts/review_bccd_missing.py MODEL_DIR OUT_DIR [--bccd ../shared/datasets/bccd]

The relabelling is itself semi-automatic (a YOLOv8n model, then a manual audit: its SOURCE.txt), so
"right" means "agrees with an independent relabelling", not ground truth.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from qualmet.atomic import write_text
from qualmet.boxes import iou_matrix
from qualmet.detector.predictor import Predictor
from qualmet.formats import load_dataset
from qualmet.review import build_review
from qualmet.runner import run_metrics

IOU = 0.5


def test_frames(bccd: Path):
    """The 40 relabelled frames with their original labels, and the relabelling on the same ids."""
    images = bccd / "images"
    relab = load_dataset(bccd / "relabelled_test" / "annotations", fmt="voc", images=images)
    orig = load_dataset(bccd / "annotations", fmt="voc", images=images)
    keep = orig.images[orig.images["file_name"].isin(relab.images["file_name"])]["id"]
    orig = orig.subset(sorted(int(i) for i in keep))
    id_of = dict(zip(orig.images["file_name"], orig.images["id"]))
    cat_of = dict(zip(orig.categories["name"], orig.categories["id"]))
    r_img = dict(zip(relab.images["id"], relab.images["file_name"]))
    r_cat = dict(zip(relab.categories["id"], relab.categories["name"]))
    truth = relab.annotations.assign(image_id=relab.annotations["image_id"].map(lambda i: id_of[r_img[i]]),
                                     category_id=relab.annotations["category_id"].map(lambda c: cat_of[r_cat[c]]))
    return orig, truth


def _boxes(df: pd.DataFrame) -> np.ndarray:
    return df[["x", "y", "w", "h"]].to_numpy(float)


def truly_missing(orig, truth: pd.DataFrame) -> pd.DataFrame:
    """Relabelled boxes that no original box overlaps (IoU >= 0.5, any class)."""
    out = []
    for img, t in truth.groupby("image_id"):
        o = orig.annotations[orig.annotations["image_id"] == img]
        hit = (iou_matrix(_boxes(t), _boxes(o)) >= IOU).any(axis=1) if len(o) else np.zeros(len(t), bool)
        out.append(t[~hit])
    return pd.concat(out, ignore_index=True)


def judge(review, orig, truth: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    """One row per missing-box or wrong-class issue, in queue order, with ``right`` (bool)."""
    rows = []
    for r in review.issues.itertuples(index=False):
        if r.kind == "missing box":
            m = missing[missing["image_id"] == r.image_id]
            ious = iou_matrix(np.array([[r.sx, r.sy, r.sw, r.sh]]), _boxes(m))[0] if len(m) else np.zeros(0)
            rows.append((r.kind, r.rank, r.score, r.image_id, bool((ious >= IOU).any()),
                         float(ious.max()) if len(ious) else 0.0))
        elif r.kind == "wrong class":
            a = orig.annotations[orig.annotations["id"] == r.annotation_id].iloc[0]
            t = truth[truth["image_id"] == r.image_id]
            ious = iou_matrix(_boxes(a.to_frame().T), _boxes(t))[0] if len(t) else np.zeros(0)
            best = int(np.argmax(ious)) if len(ious) else -1
            right = best >= 0 and ious[best] >= IOU and int(t.iloc[best]["category_id"]) != int(a["category_id"])
            rows.append((r.kind, r.rank, r.score, r.image_id, bool(right), float(ious.max()) if len(ious) else 0.0))
    return pd.DataFrame(rows, columns=["kind", "rank", "score", "image_id", "right", "best_iou"])


def precision_at(j: pd.DataFrame, k: int) -> str:
    top = j.head(k)
    return f"{int(top['right'].sum())} / {len(top)}" if len(top) else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--bccd", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bccd"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    orig, truth = test_frames(Path(args.bccd))
    missing = truly_missing(orig, truth)
    preds = Predictor.load(args.model, device="cpu").predict_dataset(orig, progress=False)
    run = run_metrics(orig, predictions=preds, out=out / "run", workers=1, progress=False)
    review = build_review(orig, run, preds)
    judged = judge(review, orig, truth, missing)
    write_text(out / "judged_against_relabelling.csv", judged.to_csv(index=False))
    lines = ["# Model-based review kinds on BCCD's 40 relabelled test frames", "",
             f"Model: `{args.model}` (trained on the training pool, never on these frames). "
             f"Original labels: {len(orig.annotations)} boxes; relabelling: {len(truth)}; "
             f"relabelled boxes no original box overlaps (IoU >= {IOU}): {len(missing)}.", "",
             "| kind | issues | right @10 | right @30 | right @100 | right, all |", "|---|---|---|---|---|---|"]
    for kind in ("missing box", "wrong class"):
        j = judged[judged["kind"] == kind]
        lines.append(f"| {kind} | {len(j)} | {precision_at(j, 10)} | {precision_at(j, 30)} | {precision_at(j, 100)} | "
                     f"{precision_at(j, len(j))} |")
    mj = judged[judged["kind"] == "missing box"]
    found = 0
    for img, m in missing.groupby("image_id"):
        s = review.issues[(review.issues["kind"] == "missing box") & (review.issues["image_id"] == img)]
        if len(s):
            found += int((iou_matrix(_boxes(m), s[["sx", "sy", "sw", "sh"]].to_numpy(float)) >= IOU).any(axis=1).sum())
    lines += ["", f"Recall of the missing-box suggestions: {found} of the {len(missing)} missed cells "
                  f"({found / max(1, len(missing)):.0%}) overlap a suggestion; {len(mj)} suggestions in all."]
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
