"""The report sections about the data: overview, one card per metric (histogram, fences, worst-first
and best-first galleries) and the explorer's data blobs. Pure functions of the loaded run, the
written thumbnails and the histogram writer; they return HTML strings."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from ..metric_run import MetricRun, fences
from ..plots import histogram_png
from ..stats import auroc
from .html import esc, img, json_script, num, seconds, section, table, tile
from .inputs import MetricInfo, RunData
from .output import Output, strip_png_text
from .thumbs import Thumbs

GALLERY_WORST = 24
GALLERY_BEST = 12


def _fin(v: Any) -> Any:
    """A JSON-safe scalar: numpy types to Python, NaN to None."""
    if v is None:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    return v


def suspicious_order(suspicion: pd.Series, ids: pd.Series) -> np.ndarray:
    """Row positions with a value, most suspicious first, ties by id."""
    v = suspicion.to_numpy(dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(v))
    return ok[np.lexsort((ids.to_numpy()[ok], -v[ok]))]


def least_suspicious_order(suspicion: pd.Series, ids: pd.Series) -> np.ndarray:
    """Row positions with a value, least suspicious first, ties by id."""
    return suspicious_order(-suspicion, ids)


# -- 1 overview ---------------------------------------------------------------------------------

def _runner_errors(info: dict) -> list[str]:
    """The card listing what the runner recorded: metric errors, skipped frames, unloaded records."""
    errors = info.get("errors") or []
    skipped = info.get("skipped_frames") or []
    html: list[str] = []
    if errors or skipped or (info.get("dataset") or {}).get("skipped_items"):
        parts = []
        if errors:
            rows = [(e.get("metric"), "whole data set" if e.get("image_id") is None else e.get("image_id"),
                     e.get("file_name") or "", e.get("error")) for e in errors[:50]]
            more = f'<p class="muted small">and {len(errors) - 50} more in run.json</p>' if len(errors) > 50 else ""
            by = ", ".join(f"{k}: {v}" for k, v in (info.get("errors_by_metric") or {}).items())
            parts.append(f"<h4>Metric errors ({len(errors)}; {esc(by)})</h4>"
                         f'{table(["metric", "image", "file", "error"], rows, cls="compact")}{more}')
        if skipped:
            rows = [(s.get("image_id"), s.get("file_name"), s.get("reason")) for s in skipped[:50]]
            parts.append(f"<h4>Skipped frames ({len(skipped)})</h4>{table(['image', 'file', 'reason'], rows, cls='compact')}")
        items = (info.get("dataset") or {}).get("skipped_items") or []
        if items:
            rows = [(i.get("item"), i.get("message")) for i in items[:50]]
            parts.append(f"<h4>Data set records not loaded ({len(items)})</h4>{table(['item', 'problem'], rows, cls='compact')}")
        html.append(f'<div class="card"><h3>Errors recorded by the runner</h3>{"".join(parts)}</div>')
    return html


def overview(run: RunData, thumbs: Thumbs | None, inputs: dict[str, str]) -> str:
    info, objects, frames = run.info, run.objects, run.frames
    names = run.category_names
    n_frames, n_obj = len(frames), len(objects)
    per_frame = objects.groupby("image_id").size().reindex(frames["image_id"]).fillna(0).astype(int)
    timings = info.get("timings") or {}
    errors = info.get("errors") or []
    skipped = info.get("skipped_frames") or []
    obj_m = [m for m in run.metrics if m.level == "object"]
    fr_m = [m for m in run.metrics if m.level == "frame"]
    cats = objects["category_id"].value_counts().sort_index()
    cat_names = [names.get(int(c), str(c)) for c in cats.index]
    tiles = [
        tile("Frames", num(n_frames), f"{int((per_frame == 0).sum())} without boxes"),
        tile("Objects (boxes)", num(n_obj)),
        tile("Classes", num(len(cats)), esc(", ".join(cat_names[:4]) + (" …" if len(cat_names) > 4 else ""))),
        tile("Boxes per frame", num(per_frame.mean() if n_frames else float("nan"), 3),
             f"median {num(per_frame.median() if n_frames else None)} · max {num(int(per_frame.max()) if n_frames else None)}"),
        tile("Metrics", num(len(run.metrics)), f"{len(obj_m)} object · {len(fr_m)} frame"),
        tile("Metric run time", seconds(timings.get("total_s")),
             f"compute {seconds(timings.get('compute_s'))} · {info.get('workers', '?')} worker(s)"),
        tile("Runner errors", num(len(errors)),
             f"in {len(info.get('errors_by_metric') or {})} metric(s)" if errors else "every value computed",
             "bad" if errors else "ok"),
        tile("Skipped frames", num(len(skipped)), "image could not be read" if skipped else "all frames read",
             "bad" if skipped else "ok"),
    ]
    if run.manifest is not None:
        by_type = run.manifest["type"].value_counts()
        tiles.append(tile("Injected errors", num(len(run.manifest)),
                          esc(" · ".join(f"{k} {v}" for k, v in by_type.items())), ""))
    html = [f'<div class="tiles">{"".join(tiles)}</div>']
    for note in run.notes:
        html.append(f'<div class="note">{esc(note)}</div>')
    if thumbs is not None and thumbs.failed:
        f0 = thumbs.failed[0]
        html.append(f'<div class="note">{len(thumbs.failed)} frame(s) could not be read for thumbnails; first: '
                    f'image {f0["image_id"]} ({esc(f0["file_name"])}): {esc(f0["reason"])}</div>')

    # boxes per frame as a small bar chart, classes, inputs
    counts = per_frame.clip(upper=8).value_counts().reindex(range(9), fill_value=0)
    top = max(int(counts.max()), 1)
    bars = "".join(f'<div class="bar" title="{c} frame(s) with {k}{"+" if k == 8 else ""} boxes"><b>{c}</b>'
                   f'<div style="height:{max(2, round(100 * c / top))}%"></div><span>{k}{"+" if k == 8 else ""}</span></div>'
                   for k, c in counts.items())
    cls_rows = []
    fr_per_cat = objects.groupby("category_id")["image_id"].nunique()
    for c, n in cats.items():
        cls_rows.append((names.get(int(c), str(c)), f"{int(n):,}", f"{int(fr_per_cat.get(c, 0)):,}"))
    kv = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" for k, v in inputs.items())
    html.append('<div class="grid2">'
                f'<div class="card"><h3>Boxes per frame</h3><div class="bars">{bars}</div></div>'
                f'<div class="card"><h3>Classes</h3>{table(["class", "boxes", "frames"], cls_rows, num_cols=(1, 2), cls="compact")}</div>'
                '</div>')
    html.append(f'<div class="card"><h3>Inputs</h3><div class="tablewrap"><table class="kv compact">{kv}</table></div></div>')

    html += _runner_errors(info)

    secs = (timings.get("seconds_in_workers") or {})
    if secs:
        total = sum(secs.values()) or 1.0
        rows = [(k, seconds(v), f"{100 * v / total:.0f}%") for k, v in sorted(secs.items(), key=lambda kv: -kv[1])]
        html.append(f'<details class="card more"><summary>Time per metric (summed over workers)</summary>'
                    f'{table(["metric / step", "time", "share"], rows, num_cols=(1, 2), cls="compact")}</details>')
    return section("overview", 1, "Overview", "".join(html),
                   f"{num(n_frames)} frames and {num(n_obj)} boxes; {len(run.metrics)} metrics from "
                   f"<code>{esc(run.dir)}</code>.")


# -- 2 per metric -------------------------------------------------------------------------------

def _injected_mask(run: RunData, level: str) -> np.ndarray | None:
    if run.manifest is None:
        return None
    if level == "object":
        return run.object_error_types().notna().to_numpy()
    return (run.frame_error_counts() > 0).to_numpy()


def _gallery(run: RunData, m: MetricInfo, order: np.ndarray, thumbs: Thumbs | None, kinds: pd.Series | None,
             frame_errs: pd.Series | None) -> str:
    """Thumbnail tiles of the rows at ``order`` (positions in the metric's table): picture, value, id,
    injected-error badge; a click shows the whole frame."""
    table_ = run.objects if m.level == "object" else run.frames
    files = run.file_names
    items = []
    for pos in order:
        row = table_.iloc[int(pos)]
        iid = int(row["image_id"])
        if m.level == "object":
            oid = int(row["annotation_id"])
            src = thumbs.objects.get(oid) if thumbs else None
            ident = f"#{oid} · {files.get(iid, str(iid))}"
            kind = kinds.iloc[int(pos)] if kinds is not None else None
            kind = kind if isinstance(kind, str) else None  # NaN: a clean box
            badge = f'<span class="badge err">{esc(kind)}</span>' if kind else ""
        else:
            oid = iid
            src = thumbs.frames.get(iid) if thumbs else None
            ident = f"{row['file_name']}"
            n_err = int(frame_errs.iloc[int(pos)]) if frame_errs is not None else 0
            kind = n_err or None
            badge = f'<span class="badge err">{n_err} injected</span>' if n_err else ""
        full = thumbs.frames.get(iid) if thumbs else None
        cap = f"{m.name} = {row[m.name]:.6g} · {'annotation ' + str(oid) + ' · ' if m.level == 'object' else ''}{files.get(iid, str(iid))}"
        pic = img(src, ident, cls="", lazy=True) if src else '<div class="noimg">no image</div>'
        data = f' data-full="{esc(full)}" data-cap="{esc(cap)}"' if full else ""
        items.append(f'<div class="thumb{" injected" if kind else ""}" data-id="{oid}" data-value="{json.dumps(_fin(row[m.name]))}"'
                     f'{data} title="{esc(cap)}">{pic}<div class="cap"><span class="v">{num(row[m.name], 4)}</span> '
                     f'{badge}<span class="id">{esc(ident)}</span></div></div>')
    cls = "gallery" + (" frames" if m.level == "frame" else "")
    return f'<div class="{cls}" data-metric="{esc(m.name)}">{"".join(items)}</div>' if items else \
        '<p class="muted">no values</p>'


def metric_stats(run: MetricRun, name: str) -> dict[str, Any]:
    """What the card's side table shows: counts, quartiles, fences, items beyond the suspicious fence."""
    v = run.values(name).to_numpy(dtype=np.float64)
    ok = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(len(ok)), "nan": int(len(v) - len(ok))}
    if len(ok):
        q = np.percentile(ok, [0, 25, 50, 75, 100])
        out.update(min=q[0], q1=q[1], median=q[2], q3=q[3], max=q[4])
        lo, hi = run.fences(name)
        out.update(lo=lo, hi=hi, beyond=int(run.beyond_fence(name).sum()))
    return out


def metric_cards(run: RunData, out: Output, thumbs: Thumbs | None, number: int = 2) -> str:
    """Section 2: a summary table, then per metric: histogram, fences, galleries."""
    kinds = run.object_error_types() if run.manifest is not None else None
    frame_errs = run.frame_error_counts() if run.manifest is not None else None
    summary_rows, cards = [], []
    for m in run.metrics:
        table_ = run.objects if m.level == "object" else run.frames
        vals = table_[m.name]
        ids = table_["annotation_id"] if m.level == "object" else table_["image_id"]
        inj = _injected_mask(run, m.level)
        st = metric_stats(run.run, m.name)
        susp = run.run.suspicion(m.name)
        au = None
        if inj is not None and inj.any() and (~inj).any():
            au = auroc(susp.to_numpy(), inj)
        png = histogram_png(vals.to_numpy(dtype=np.float64), m.worse, inj,
                            labels=("clean", "injected error") if m.level == "object" else
                            ("clean frames", "frames with injected errors"))
        rel = out.write_bytes(f"assets/plots/hist_{_slug(m.name)}.png", strip_png_text(png))
        worst = suspicious_order(susp, ids)[:GALLERY_WORST]
        best = least_suspicious_order(susp, ids)[:GALLERY_BEST]
        side = [("values", num(st["n"])), ("not defined (NaN)", num(st["nan"]))]
        if st["n"]:
            side += [("min · max", f"{num(st['min'], 4)} · {num(st['max'], 4)}"),
                     ("Q1 · median · Q3", f"{num(st['q1'], 4)} · {num(st['median'], 4)} · {num(st['q3'], 4)}"),
                     ("1.5× IQR fences", f"{num(st['lo'], 4)} · {num(st['hi'], 4)}"),
                     (f"beyond the {'upper' if m.worse == 'high' else 'lower'} fence",
                      f"{num(st['beyond'])} ({100 * st['beyond'] / st['n']:.1f}%)")]
        if au is not None:
            side.append(("AUROC vs injected errors", f"{au:.3f}"))
        if m.seconds is not None:
            side.append(("compute time", seconds(m.seconds)))
        side_html = "".join(f"<tr><th>{esc(k)}</th><td class='num'>{v}</td></tr>" for k, v in side)
        badges = (f'<span class="badge">{m.level}</span> <span class="badge hi">{m.worse} = suspicious</span>'
                  + (f' <span class="badge {"ok" if au >= 0.7 else ""}">AUROC {au:.2f}</span>' if au is not None else ""))
        unit = "objects" if m.level == "object" else "frames"
        cards.append(
            f'<div class="card metric" id="m-{_slug(m.name)}"><div class="metric-head"><h3>{esc(m.name)}</h3>{badges}</div>'
            f'<p class="muted small">{esc(m.description)}</p>'
            f'<div class="metric-body"><div>{img(rel, "histogram of " + m.name, lazy=True)}</div>'
            f'<table class="kv compact">{side_html}</table></div>'
            f'<h4>{min(GALLERY_WORST, len(worst))} most suspicious {unit}</h4>{_gallery(run, m, worst, thumbs, kinds, frame_errs)}'
            f'<details class="more"><summary>{min(GALLERY_BEST, len(best))} least suspicious {unit}, for contrast</summary>'
            f'{_gallery(run, m, best, thumbs, kinds, frame_errs)}</details></div>')
        summary_rows.append((f'<a href="#m-{_slug(m.name)}"><code>{esc(m.name)}</code></a>', m.level, m.worse,
                             num(st["n"]), num(st["nan"]), num(st.get("median"), 4),
                             num(st.get("beyond")) if st["n"] else "–",
                             *(([f"{au:.3f}" if au is not None else "–"]) if run.manifest is not None else []),
                             seconds(m.seconds)))
    heads = ["metric", "level", "worse", "values", "NaN", "median", "beyond fence"]
    heads += (["AUROC (injected)"] if run.manifest is not None else []) + ["time"]
    summary = table(heads, summary_rows, num_cols=range(3, len(heads)), cls="compact", raw=True)
    legend = ('<div class="legend"><span><i style="background:#ff2828"></i>the object</span>'
              '<span><i style="background:#ffd600"></i>other boxes in the frame</span>'
              + ('<span><i style="background:#3cdc3c"></i>clean box (frame view)</span>'
                 '<span><i style="background:#ff2828"></i>injected error (frame view)</span>'
                 '<span><i style="background:#ffd600"></i>deleted box, dashed</span>' if run.manifest is not None else "")
              + "</div>")
    lead = ("Each metric's distribution with its 1.5× IQR fences (the shaded side is the one the metric calls "
            "suspicious), then the objects or frames it ranks as most suspicious. "
            + ("Red in the histograms are the annotations with an injected error (from the noise manifest): a metric "
               "that separates them piles the red on the shaded side. " if run.manifest is not None else "")
            + "Click a picture to see its whole frame.")
    return section("metrics", number, "Metrics", f'<div class="card">{summary}</div>{legend}{"".join(cards)}', lead)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# -- 3 explorer data ----------------------------------------------------------------------------

def explorer_blobs(run: RunData, thumbs: Thumbs | None) -> tuple[dict, dict]:
    """The two JSON blobs the explorer renders: one row per object and one per frame."""
    names = run.category_names
    frame_thumbs = {str(k): v for k, v in (thumbs.frames.items() if thumbs else [])}
    o, f = run.objects, run.frames
    files = dict(zip(f["image_id"].astype(int), f["file_name"].astype(str)))

    def metric_col(m: MetricInfo, vals: pd.Series) -> dict:
        fc = fences(vals.to_numpy(dtype=np.float64))
        return {"key": m.name, "type": "metric", "worse": m.worse, "title": f"{m.description} (click: most "
                f"suspicious first; again: reverse)", "lo": _fin(fc[0]) if fc else None, "hi": _fin(fc[1]) if fc else None}

    ocols = [{"key": "thumb", "type": "thumb"}, {"key": "check", "type": "check"},
             {"key": "annotation_id", "type": "id", "label": "annotation"},
             {"key": "image_id", "type": "id", "label": "image", "hidden": True},
             {"key": "file_name", "type": "text", "label": "file"},
             {"key": "class", "type": "text", "hidden": bool(o["category_id"].nunique() < 2)}]
    ovals: list[list] = [
        [thumbs.objects.get(int(a)) if thumbs else None for a in o["annotation_id"]], [None] * len(o),
        o["annotation_id"].astype(int).tolist(), o["image_id"].astype(int).tolist(),
        [files.get(int(i), "") for i in o["image_id"]],
        [names.get(int(c), str(int(c))) for c in o["category_id"]]]
    if run.manifest is not None:
        ocols.append({"key": "error", "type": "error", "label": "injected", "title": "error type from the noise manifest"})
        ovals.append([_fin(v) if isinstance(v, str) else None for v in run.object_error_types()])
    for m in run.metrics:
        if m.level == "object":
            ocols.append(metric_col(m, o[m.name]))
            ovals.append([_fin(v) for v in o[m.name].to_numpy(dtype=np.float64)])
    per_frame = o.groupby("image_id").size()
    fcols = [{"key": "thumb", "type": "thumb"}, {"key": "check", "type": "check"},
             {"key": "image_id", "type": "id", "label": "image"}, {"key": "file_name", "type": "text", "label": "file"},
             {"key": "boxes", "type": "int"}]
    fvals: list[list] = [[thumbs.frames.get(int(i)) if thumbs else None for i in f["image_id"]], [None] * len(f),
                         f["image_id"].astype(int).tolist(), f["file_name"].astype(str).tolist(),
                         [int(per_frame.get(int(i), 0)) for i in f["image_id"]]]
    if run.manifest is not None:
        fcols.append({"key": "injected", "type": "int", "title": "injected errors in the frame (deleted boxes included)"})
        fvals.append([int(v) for v in run.frame_error_counts()])
    for m in run.metrics:
        if m.level == "frame":
            fcols.append(metric_col(m, f[m.name]))
            fvals.append([_fin(v) for v in f[m.name].to_numpy(dtype=np.float64)])
    obj = {"level": "object", "idKey": "annotation_id", "noun": "objects", "columns": ocols,
           "rows": [list(r) for r in zip(*ovals)] if len(o) else [], "frameThumbs": frame_thumbs}
    fr = {"level": "frame", "idKey": "image_id", "noun": "frames", "columns": fcols,
          "rows": [list(r) for r in zip(*fvals)] if len(f) else [], "frameThumbs": frame_thumbs}
    return obj, fr


def explorer(run: RunData, thumbs: Thumbs | None, number: int = 3) -> str:
    """Section 3: the client-side table of every object and every frame."""
    obj, fr = explorer_blobs(run, thumbs)
    body = (f'<div class="card"><div class="tabs"><button class="active" data-tab="tab-objects">Objects '
            f'({len(obj["rows"]):,})</button><button data-tab="tab-frames">Frames ({len(fr["rows"]):,})</button></div>'
            f'<div id="tab-objects"><div id="explorer-objects" data-explorer="data-objects"></div></div>'
            f'<div id="tab-frames" hidden><div id="explorer-frames" data-explorer="data-frames"></div></div>'
            f'{json_script("data-objects", obj)}{json_script("data-frames", fr)}</div>')
    lead = ("Every object and frame with its metric values. Click a metric header to sort (first click: most "
            "suspicious first; again: reverse), filter by a threshold on any metric (<b>fence</b> fills in the 1.5× "
            "IQR fence), tick rows and export their ids as JSON or CSV to send them to relabeling. Values beyond "
            "the fence on the suspicious side are red.")
    return section("explorer", number, "Explorer", body, lead)
