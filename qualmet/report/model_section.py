"""Section 4, the model: training settings and loss curves, the COCO stats of its evaluation, the PR
curve and confusion matrix (the plots ``qualmet train`` / ``qualmet evaluate`` made, copied), and a
few test frames with its predictions drawn against the labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .html import esc, img, num, section, table
from .inputs import ModelData
from .output import Output
from .thumbs import encode_jpeg, prediction_view

N_FRAMES = 6
STAT_NAMES = {"AP": "AP @[.5:.95]", "AP50": "AP @.5", "AP75": "AP @.75", "APs": "AP small", "APm": "AP medium",
              "APl": "AP large", "AR1": "AR @1", "AR10": "AR @10", "AR100": "AR @100", "ARs": "AR small",
              "ARm": "AR medium", "ARl": "AR large"}


def _loss_plot(model: ModelData, out: Output) -> str | None:
    """The loss curves PNG ``qualmet train`` wrote into the model folder (None when it is not there)."""
    src = model.dir / "loss_curves.png"
    return out.copy(src, "assets/model/loss_curves.png") if src.is_file() else None


def pick_frames(image_ids, k: int = N_FRAMES) -> list[int]:
    """``k`` test frames spread evenly over the sorted image ids (deterministic)."""
    ids = np.sort(np.asarray(list(image_ids), dtype=np.int64))
    if not len(ids):
        return []
    pos = np.unique(np.round(np.linspace(0, len(ids) - 1, min(k, len(ids)))).astype(int))
    return [int(ids[p]) for p in pos]


def _predictions(model: ModelData, test, frame_ids: list[int]) -> pd.DataFrame | None:
    """The chosen frames' predictions from the predictions file, or None without one (the report
    draws what it is given; ``qualmet report --model`` predicts the frames first)."""
    if model.predictions_path is None:
        return None
    from ..formats import load_predictions

    p = load_predictions(model.predictions_path, test)
    return p[p["image_id"].isin(frame_ids)]


def _test_frames(model: ModelData, test, out: Output, threshold: float) -> str:
    from ..imageio import read_image

    frame_ids = pick_frames(test.images["id"])
    files = dict(zip(test.images["id"].astype(int), test.images["file_name"].astype(str)))
    images, failed = {}, []
    for i in frame_ids:
        try:
            images[i] = read_image(test.image_path(files[i]))
        except Exception as exc:  # one unreadable frame never loses the others
            failed.append(f"image {i} ({files[i]}): {exc}")
    preds = _predictions(model, test, frame_ids)
    if preds is None:
        preds = pd.DataFrame(columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
        failed.append("no predictions given: labels only (pass --predictions P.json, or let `qualmet report "
                      "--model` predict these frames)")
    figs = []
    for i in frame_ids:
        if i not in images:
            continue
        g = test.annotations[test.annotations["image_id"] == i]
        p = preds[(preds["image_id"] == i) & (preds["score"] >= threshold)]
        best = preds.loc[preds["image_id"] == i, "score"].max() if (preds["image_id"] == i).any() else None
        view = prediction_view(images[i], g[["x", "y", "w", "h"]].to_numpy(float), p[["x", "y", "w", "h"]].to_numpy(float),
                               p["score"].to_numpy(float))
        rel = out.write_bytes(f"assets/model/test_{i}.jpg", encode_jpeg(view, 85))
        figs.append(f'<figure>{img(rel, files[i], cls="", lazy=True)}<figcaption>{esc(files[i])}: {len(g)} label(s), '
                    f'{len(p)} prediction(s) ≥ {threshold:g}{"" if best is None else f" (best score {best:.2f})"}'
                    f"</figcaption></figure>")
    notes = "".join(f'<div class="note">{esc(f)}</div>' for f in failed)
    legend = ('<div class="legend"><span><i style="background:#3cdc3c"></i>label</span>'
              f'<span><i style="background:#ff8c00"></i>prediction (score ≥ {threshold:g}, score written)</span></div>')
    src = f"<code>{esc(model.predictions_path)}</code>" if model.predictions_path is not None else "none"
    return (f'<div class="card"><h3>Test frames: predictions vs labels</h3><p class="muted small">{len(figs)} frames of '
            f'<code>{esc(test.source)}</code>, predictions from {src}.</p>{legend}{notes}'
            f'<div class="frames-row">{"".join(figs)}</div></div>')


def model_section(model: ModelData, out: Output, test=None, number: int = 4) -> str:
    """Section 4. ``test`` is the test Dataset for the prediction examples (None leaves them out)."""
    cfg = model.config
    rec = cfg.get("recipe") or {}
    kv = [("folder", f"<code>{esc(model.dir)}</code>"), ("recipe", esc(rec.get("name", "?"))),
          ("iterations", num(rec.get("iters"))), ("input size", num(rec.get("input_size"))),
          ("batch size", num(rec.get("batch_size"))), ("seed", num(cfg.get("seed"))),
          ("training frames", num(cfg.get("n_train_images"))),
          ("validation frames", num(len(cfg.get("val_image_ids") or []))),
          ("classes", esc(", ".join(c["name"] for c in cfg.get("categories", []))))]
    if model.log is not None and len(model.log):
        last = model.log.iloc[-1]
        kv += [("final train loss", num(last.get("train_loss"), 4)), ("final val loss", num(last.get("val_loss"), 4)),
               ("final val mAP · AP50", f"{num(last.get('val_AP'), 3)} · {num(last.get('val_AP50'), 3)}"),
               ("training time", f"{num(last.get('elapsed_s'), 3)} s")]
    kv_html = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in kv)
    loss = _loss_plot(model, out)
    parts = [f'<div class="grid2"><div class="card"><h3>Training</h3><table class="kv compact">{kv_html}</table></div>'
             f'<div class="card"><h3>Loss curves</h3>'
             f'{img(loss, "train and validation loss") if loss else "<p class=muted>no training log</p>"}</div></div>']
    threshold = 0.5
    ev = model.eval_metrics
    if ev is not None:
        threshold = float(ev.get("score_threshold", 0.5))
        stats = ev.get("stats") or {}
        ap = [(STAT_NAMES.get(k, k), num(stats.get(k), 3)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        ar = [(STAT_NAMES.get(k, k), num(stats.get(k), 3)) for k in ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")]
        stats_tbl = table(["precision", "", "recall", ""], [(a[0], a[1], r[0], r[1]) for a, r in zip(ap, ar)],
                          num_cols=(1, 3), cls="compact")
        pc = ev.get("per_class_AP") or {}
        cls_tbl = table(["class", "AP"], [(k, num(v, 3)) for k, v in pc.items()], num_cols=(1,), cls="compact") if pc else ""
        c = ev.get("counts_at_threshold") or {}
        counts = (f'<p class="small muted">{num(ev.get("n_images"))} test frames, {num(ev.get("n_gt"))} boxes, '
                  f'{num(ev.get("n_predictions"))} predictions. At score ≥ {threshold:g} and IoU ≥ '
                  f'{ev.get("iou_threshold", 0.5):g}: TP {num(c.get("tp"))}, FP {num(c.get("fp"))}, FN {num(c.get("fn"))}.</p>')
        plots = []
        for name, alt in (("pr_curve.png", "precision-recall curve"), ("confusion_matrix.png", "confusion matrix")):
            if (model.eval_dir / name).is_file():
                plots.append(f'<div class="card"><h3>{alt.capitalize()}</h3>'
                             f'{img(out.copy(model.eval_dir / name, "assets/model/" + name), alt)}</div>')
        parts.append(f'<div class="card"><h3>COCO evaluation</h3><p class="small muted">pycocotools, from '
                     f'<code>{esc(model.eval_dir / "metrics.json")}</code></p>{counts}'
                     f'<div class="grid2"><div>{stats_tbl}</div><div>{cls_tbl}</div></div></div>')
        if plots:
            parts.append(f'<div class="grid2">{"".join(plots)}</div>')
    if test is not None:
        parts.append(_test_frames(model, test, out, threshold))
    return section("model", number, "Model", "".join(parts),
                   "The fixed detector: how training went, how it scores on the test split, and what it sees.")


def find_test_set(model: ModelData, experiment_dir: Path | None):
    """The test Dataset for prediction examples: ``--test``, else the experiment's clean test split."""
    from ..formats import load_coco

    if model.test_path is not None:
        return load_coco(model.test_path)
    if experiment_dir is not None and (experiment_dir / "data" / "test.json").is_file():
        return load_coco(experiment_dir / "data" / "test.json")
    return None
