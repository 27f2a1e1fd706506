"""How well does ranking by each metric find the injected label errors? AUROC and average precision
per metric x error type, at annotation level (and at frame level for deleted boxes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_text
from .metric_run import MetricRun
from .plots import auroc_heatmap
from .stats import auroc


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve of ranking by ``scores`` (higher = more likely positive)."""
    labels = np.asarray(labels, bool)
    if labels.sum() == 0:
        return float("nan")
    s = np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    order = np.argsort(-s, kind="mergesort")
    s, hits = s[order], labels[order]
    # Tied scores are one threshold (as in scikit-learn): their order must not matter.
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # end of each group of equal scores
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / hits.sum()
    return float((recall_step * precision).sum())


TABLE_COLUMNS = ["metric", "type", "level", "positives", "n", "auroc", "ap", "precision_at_k"]


def detection_table(run: MetricRun, manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows: metric, error type, level, positives, AUROC, AP, precision@k (k = positives)."""
    rows = []
    objects, frames = run.objects, run.frames
    kinds = manifest.drop_duplicates("annotation_id").set_index("annotation_id")["type"]
    obj_kind = objects["annotation_id"].map(kinds)
    for m in [m for m in run.metrics if run.level(m) == "object"]:
        susp = run.suspicion(m)
        for t in sorted(obj_kind.dropna().unique()):
            sel = obj_kind.isna() | (obj_kind == t)
            y = (obj_kind[sel] == t).to_numpy()
            rows.append(_row(m, t, "annotation", susp[sel].to_numpy(), y))
        y_any = obj_kind.notna().to_numpy()
        rows.append(_row(m, "any", "annotation", susp.to_numpy(), y_any))
    missing_frames = set(manifest.loc[manifest["type"] == "missing", "image_id"].astype(int))
    if missing_frames:
        # as for boxes (each type against the clean ones): frames that lost a box against untouched frames;
        # frames holding only other injected errors are neither
        touched = set(manifest["image_id"].astype(int))
        ids = frames["image_id"].astype(int)
        sel = (ids.isin(missing_frames) | ~ids.isin(touched)).to_numpy()
        y = ids[sel].isin(missing_frames).to_numpy()
        for m in [m for m in run.metrics if run.level(m) == "frame"]:
            susp = run.suspicion(m)
            rows.append(_row(m, "missing", "frame", susp.to_numpy()[sel], y))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def learned_table(run: MetricRun, manifest: pd.DataFrame, n_frames: int, seed: int = 0,
                  metrics: list[str] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """:func:`detection_table` with one more object metric, ``learned``: a logistic combiner of
    ``metrics`` (default: every object metric) fitted on the boxes of ``n_frames`` verified frames,
    whose truth the manifest gives (a box it records, of any type but ``missing``, is wrong). Every
    row, the single metrics' too, is scored on the other frames only, so the learned row is judged on
    boxes it never saw and against the same boxes as the rest. Returns the table and the verified frames."""
    from .combine import verified_frames, with_learned

    frames = verified_frames(run.frames["image_id"], n_frames, seed)
    objs = run.objects
    in_v = objs["image_id"].isin(frames).to_numpy()
    wrong_ids = set(manifest.loc[manifest["type"] != "missing", "annotation_id"].astype(int))
    ids = objs.loc[in_v, "annotation_id"].astype(int)
    learned, _ = with_learned(run, pd.Series(ids.isin(wrong_ids).to_numpy(), index=ids.to_numpy()), metrics)
    rest = MetricRun(learned.objects[~in_v].reset_index(drop=True),
                     learned.frames[~learned.frames["image_id"].isin(frames)].reset_index(drop=True), learned.info)
    return detection_table(rest, manifest[~manifest["image_id"].isin(frames)]), frames


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of positives among the ``k`` highest ``scores`` (NaN lowest). Rows tied with the k-th
    score fill the remaining places at their group's hit rate, the expected value over tie orders,
    so the row order of the table cannot change it."""
    y = np.asarray(labels, bool)
    if k <= 0 or len(y) == 0:
        return float("nan")
    s = np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    kth = np.sort(s)[::-1][min(k, len(s)) - 1]
    above, tied = s > kth, s == kth
    hits = y[above].sum() + y[tied].mean() * (min(k, len(s)) - above.sum())
    return float(hits / k)


def _row(metric: str, kind: str, level: str, susp: np.ndarray, y: np.ndarray) -> dict:
    k = int(y.sum())
    return {"metric": metric, "type": kind, "level": level, "positives": k, "n": int(len(y)),
            "auroc": auroc(susp, y),
            "ap": average_precision(susp, y), "precision_at_k": precision_at_k(susp, y, k)}


def write_label_error_report(run: MetricRun, manifest_path: str | Path, out: str | Path) -> pd.DataFrame:
    """Write label_errors.csv, .md and an AUROC heat map PNG into ``out``."""
    from .manifest import load_manifest

    table = detection_table(run, load_manifest(manifest_path))
    write_label_error_table(table, out)
    return table


def write_label_error_table(table: pd.DataFrame, out: str | Path) -> None:
    """label_errors.csv, .md and the AUROC heat map PNG of a :func:`detection_table` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "label_errors.csv") as tmp:
        table.to_csv(tmp, index=False)
    if len(table):
        piv = table.pivot_table(index="metric", columns="type", values="auroc")
        write_text(out / "label_errors.md", "# Finding the injected label errors (AUROC; 0.5 = chance)\n\n```\n"
                   + piv.round(3).to_string() + "\n```\n")
        auroc_heatmap(piv, out / "label_errors.png")
    else:  # nothing was injected (or no metric fits): say so rather than leave an empty table unexplained
        write_text(out / "label_errors.md", "# Finding the injected label errors\n\nNothing to score: the manifest "
                   "records no injected error, or no metric of the run is oriented (`worse`).\n")


# the review queue's kind for each injected error type (qualmet.manifest.ERROR_TYPES)
KIND_OF_TYPE = {"loose": "loose/shifted box", "shift": "loose/shifted box", "squash": "loose/shifted box",
                "spurious": "spurious box", "duplicate": "duplicate", "missing": "missing box",
                "wrong_class": "wrong class"}


def _issue_truth(issues: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Per issue: the injected type it found (None for a clean box or frame) and the manifest's
    annotation id of that error. A box issue finds the error recorded on its annotation; a
    missing-box issue finds the deleted box of its frame that its suggestion overlaps most (IoU >= 0.5)."""
    from .boxes import iou_matrix

    by_ann = manifest[manifest["type"] != "missing"].drop_duplicates("annotation_id").set_index("annotation_id")["type"]
    ann = issues["annotation_id"]
    found = [by_ann.get(int(a)) if pd.notna(a) else None for a in ann]
    found_id = [int(a) if f is not None else None for a, f in zip(ann, found)]
    gone = manifest[manifest["type"] == "missing"]
    for i in np.flatnonzero((issues["kind"] == "missing box").to_numpy()):
        r = issues.iloc[i]
        g = gone[gone["image_id"] == r["image_id"]]
        if len(g):
            iou = iou_matrix(np.array([[r["sx"], r["sy"], r["sw"], r["sh"]]], float),
                             g[["orig_x", "orig_y", "orig_w", "orig_h"]].to_numpy(float))[0]
            if iou.max() >= 0.5:
                found[i], found_id[i] = "missing", int(g["annotation_id"].iloc[int(np.argmax(iou))])
    return issues.assign(found=found, found_id=found_id)


def review_against_manifest(issues: pd.DataFrame, manifest: pd.DataFrame,
                            ks: tuple[int, ...] = (10, 30, 100)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How a review queue (``review.csv``'s rows) does on injected noise: per kind, the share of its
    top k issues that are injected errors (precision@k; "right kind" when the error's type maps to
    that kind); per injected type, the share found by some issue (recall) and by an issue of its
    kind."""
    t = _issue_truth(issues, manifest)
    prec = []
    for kind, g in t.groupby("kind", sort=False):
        row = {"kind": kind, "issues": len(g)}
        for k in ks:
            top = g.head(k)
            row[f"precision@{k}"] = float(top["found"].notna().mean()) if len(top) else np.nan
            row[f"right_kind@{k}"] = float((top["found"].map(KIND_OF_TYPE) == kind).mean()) if len(top) else np.nan
        prec.append(row)
    rec = []
    keyed = t[t["found"].notna()]
    for typ, g in manifest.groupby("type"):
        hits = keyed[keyed["found"] == typ]
        n_found = hits["found_id"].nunique()
        n_right = hits.loc[hits["kind"] == KIND_OF_TYPE[typ], "found_id"].nunique()
        rec.append({"type": typ, "injected": len(g), "found": int(n_found), "recall": n_found / len(g),
                    "recall_right_kind": n_right / len(g)})
    return pd.DataFrame(prec), pd.DataFrame(rec)
