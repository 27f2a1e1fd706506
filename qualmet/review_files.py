"""Writing a review queue for people and labelling tools: ``review.csv`` (the ranked issues),
``frames.csv`` (frames with the most likely problems first), ``review.json`` (the COCO data set with
``qualmet_score``, ``qualmet_issue`` and ``qualmet_reasons`` on each annotation), ``suggestions.json``
(suggested boxes as a COCO results list, each with its ``qualmet_issue``) and ``review.md``."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, write_json, write_text
from .dataset import Dataset
from .review import KINDS, Review


def suggestions(review: Review, ds: Dataset) -> list[dict]:
    """The queue's suggested boxes (missing boxes, better-fitting boxes) as COCO results."""
    names = {str(n): int(i) for i, n in zip(ds.categories["id"], ds.categories["name"])}
    q = review.issues[review.issues["sx"].notna()]
    out = []
    for r in q.itertuples(index=False):
        cat = names.get(r.suggested_category) if r.suggested_category else names.get(r.category)
        out.append({"image_id": int(r.image_id), "category_id": int(cat), "bbox": [float(r.sx), float(r.sy), float(r.sw),
                    float(r.sh)], "score": float(r.suggested_score), "qualmet_issue": r.kind,
                    "qualmet_rank": int(r.rank)})
    return out


def annotated_dataset(review: Review, ds: Dataset) -> Dataset:
    """``ds`` with each annotation's combined score, issue kind ("" for none) and reasons (a list)."""
    b = review.boxes.set_index("annotation_id")
    anns = ds.annotations.copy()
    ids = anns["id"]
    anns["qualmet_score"] = ids.map(b["score"]).astype(float)
    anns["qualmet_issue"] = ids.map(b["kind"]).fillna("")
    anns["qualmet_reasons"] = [r.split("; ") if isinstance(r, str) and r else [] for r in ids.map(b["reasons"])]
    return replace(ds, annotations=anns)


def summary_md(review: Review) -> str:
    counts = review.issues["kind"].value_counts()
    lines = ["# Review queue", "", f"{len(review.issues)} issues; by kind:", ""]
    lines += [f"- {k}: {int(counts.get(k, 0))}" for k in KINDS]
    lines += ["", "Top 10:", "", "| rank | kind | score | file | annotation | reasons |", "|---|---|---|---|---|---|"]
    for r in review.issues.head(10).itertuples(index=False):
        ann = "" if pd.isna(r.annotation_id) else int(r.annotation_id)
        lines.append(f"| {r.rank} | {r.kind} | {r.score:.3f} | {r.file_name} | {ann} | {r.reasons} |")
    lines += [""] + [f"Note: {n}" for n in review.notes]
    return "\n".join(lines) + "\n"


def write_review(review: Review, ds: Dataset, out: str | Path) -> dict[str, Path]:
    """Write every file of the queue into ``out`` (atomically) and return their paths by name."""
    from .formats import save_coco

    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    paths = {n: o / n for n in ("review.csv", "frames.csv", "review.json", "suggestions.json", "review.md")}
    for name, df in (("review.csv", review.issues), ("frames.csv", review.frames)):
        with atomic_path(paths[name]) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    save_coco(annotated_dataset(review, ds), paths["review.json"])
    write_json(paths["suggestions.json"], suggestions(review, ds))
    write_text(paths["review.md"], summary_md(review))
    return paths

