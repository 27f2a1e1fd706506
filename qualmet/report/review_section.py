"""The Review section: the review queue written by ``qualmet review`` (review.csv), worst first, as a
table of crops (the labelled box in red, a suggested box in orange) that sorts, filters by kind and
exports the ticked issues, in the explorer's widget."""
from __future__ import annotations

import math

import numpy as np

from .html import esc, json_script, num, section, table
from .inputs import ReviewData
from .output import Output
from .thumbs import FRAME_PX, encode_jpeg, frame_view, object_crop

KIND_TITLE = "issue kind (docs/review.md gives each rule)"


def _box(row, cols: tuple[str, str, str, str]):
    v = [row[c] for c in cols]
    return None if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in v) else [float(x) for x in v]


def _crops(review: ReviewData, dataset, out: Output) -> list[str | None]:
    """One JPEG per issue (None when its image cannot be read): a crop around the box and the
    suggested box, or the whole frame for a bad image."""
    from ..imageio import read_image

    anns = dataset.annotations if dataset is not None else None
    paths: list[str | None] = []
    last: tuple[int, np.ndarray | None] = (-1, None)  # the queue is not sorted by frame: one frame kept
    for row in review.issues.to_dict("records"):
        iid = int(row["image_id"])
        if dataset is None:
            paths.append(None)
            continue
        if last[0] != iid:
            try:
                last = (iid, read_image(dataset.image_path(row["file_name"])))
            except Exception:  # an unreadable image loses its picture, not the report
                last = (iid, None)
        img = last[1]
        if img is None:
            paths.append(None)
            continue
        box, sug = _box(row, ("x", "y", "w", "h")), _box(row, ("sx", "sy", "sw", "sh"))
        if box is None and sug is None:
            view = frame_view(img, np.zeros((0, 4)), [], px=FRAME_PX)
        else:
            others = anns.loc[anns["image_id"] == iid, ["x", "y", "w", "h"]].to_numpy(float)
            view = object_crop(img, box, others, suggestion=sug)
        paths.append(out.write_bytes(f"assets/review/issue_{int(row['rank'])}.jpg", encode_jpeg(view)))
    return paths


def review_blob(review: ReviewData, crops: list[str | None]) -> dict:
    """The explorer's data for the queue: one row per issue, id = its rank."""
    q = review.issues
    cols = [{"key": "thumb", "type": "thumb"}, {"key": "check", "type": "check"},
            {"key": "rank", "type": "id", "label": "rank"},
            {"key": "kind", "type": "kind", "label": "kind", "title": KIND_TITLE},
            {"key": "score", "type": "metric", "worse": "high", "lo": None, "hi": None,
             "title": "the issue's score (click: highest first)"},
            {"key": "image_id", "type": "id", "label": "image", "hidden": True},
            {"key": "file_name", "type": "text", "label": "file"},
            {"key": "annotation_id", "type": "id", "label": "annotation"},
            {"key": "category", "type": "text", "label": "class"},
            {"key": "suggested_category", "type": "text", "label": "suggested class"},
            {"key": "reasons", "type": "text", "label": "reasons"}]

    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    rows = []
    for k, r in enumerate(q.to_dict("records")):
        ann = cell(r["annotation_id"])
        rows.append([crops[k], None, int(r["rank"]), r["kind"], cell(float(r["score"])), int(r["image_id"]),
                     r["file_name"], None if ann is None else int(ann), r["category"] or None,
                     r["suggested_category"] or None, r["reasons"]])
    return {"level": "issue", "idKey": "rank", "noun": "issues", "columns": cols, "rows": rows, "frameThumbs": {}}


def review_section(review: ReviewData, dataset, out: Output, number: int) -> str:
    """The queue's counts by kind, then the table of issues (crops, kind filter, sort, export)."""
    crops = _crops(review, dataset, out)
    blob = review_blob(review, crops)
    counts = review.issues["kind"].value_counts()
    summary = table(["kind", "issues"], [(esc(k), num(int(n))) for k, n in counts.items()], num_cols=(1,), cls="compact")
    notes = "".join(f'<div class="note">{esc(n)}</div>' for n in review.notes)
    body = (f'<div class="card"><div class="grid2"><div>{summary}</div><div class="small muted">From '
            f'<code>{esc(review.dir)}</code>. Red: the labelled box; orange: the suggested box (from out-of-fold '
            f'predictions). Pick a kind to work through one kind at a time; tick issues and export their ids.'
            f'{notes}</div></div></div>'
            f'<div class="card"><div id="review-queue" data-explorer="data-review"></div>'
            f'{json_script("data-review", blob)}</div>')
    lead = ("The boxes and frames most likely to be wrong, worst first, each with the rule that flagged it and the "
            "metrics behind it. No noise manifest is needed.")
    return section("review", number, "Review", body, lead)

