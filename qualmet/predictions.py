"""The one check every set of predictions goes through, whether it comes from a file (``load_predictions``:
``metrics run``, ``evaluate``, crossval outputs, experiments) or from memory (``evaluate``).

Predictions on images the data set does not have, or of categories it does not define, are an error:
COCOeval would silently drop them and the metrics would score them as matching nothing (a ``confidence``
of 0 on every box), so they most likely belong to another data set or another numbering of its classes.
Boxes wholly outside their frame stay a :class:`PredictionsWarning`: they load, but look made on other
images (or on these images at another size).
"""
from __future__ import annotations

import warnings
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from .errors import DatasetError, PredictionsWarning


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _id(v: Any) -> str:
    """An id as the user wrote it: 7, not 7.0 (a float column), and never a crash on NaN."""
    try:
        return str(int(v)) if float(v) == int(v) else str(v)
    except (TypeError, ValueError, OverflowError):  # NaN, inf, text
        return str(v) if isinstance(v, (float, np.floating)) else repr(v)


def _first(bad: np.ndarray, file: str | None) -> str:
    """'prediction [k], ' (its position in the file: loaded rows keep file order) for predictions from a file."""
    return f"prediction [{int(np.argmax(bad))}], " if file else ""


def _shift_hint(pred_cats: set[int], cats: set[int], where: str) -> str:
    """Spell out an off-by-one numbering (a 0-based exporter against 1-based categories, or the reverse)."""
    for shift, theirs, ours in ((1, "0-based", "1-based"), (-1, "1-based", "0-based")):
        if {c + shift for c in pred_cats} <= cats:
            lo, hi = min(pred_cats), max(pred_cats)
            return (f": the predictions number their categories {lo}..{hi} ({theirs}) while {where} numbers them "
                    f"{min(cats)}..{max(cats)} ({ours}); {'add' if shift > 0 else 'subtract'} 1 to every category_id "
                    "(YOLO and many exporters count classes from 0, COCO files usually from 1)")
    return "; are these predictions for this data set?"


def check_predictions(preds: pd.DataFrame, images: pd.DataFrame | None = None,
                      categories: pd.DataFrame | None = None, where: str = "the data set", file: str | None = None,
                      warn_outside: bool = True) -> None:
    """Refuse predictions on unknown images or of unknown categories (:class:`DatasetError`, one line naming
    ``file`` when given and the first bad prediction); warn (:class:`PredictionsWarning`) when some lie
    wholly outside their frame. ``images``/``categories`` left out are not checked."""
    if not len(preds):
        return
    head = f"{file}: " if file else ""
    if images is not None:
        bad = ~preds["image_id"].isin(images["id"]).to_numpy()
        if bad.any():
            raise DatasetError(f"{head}{_count(int(bad.sum()), 'prediction')} on images not in {where} (first: "
                               f"{_first(bad, file)}image_id {_id(preds['image_id'].to_numpy()[bad][0])}); "
                               "are these predictions for this data set?")
    if categories is not None:
        bad = ~preds["category_id"].isin(categories["id"]).to_numpy()
        if bad.any():
            cats = {int(c) for c in categories["id"]}
            ids = pd.to_numeric(pd.Series(pd.unique(preds["category_id"])), errors="coerce").dropna()
            pred_cats = {int(c) for c in ids if float(c).is_integer()}
            raise DatasetError(f"{head}{_count(int(bad.sum()), 'prediction')} with a category id not among the "
                               f"categories of {where} (first: {_first(bad, file)}category_id "
                               f"{_id(preds['category_id'].to_numpy()[bad][0])})"
                               + (_shift_hint(pred_cats, cats, where) if cats and pred_cats
                                  else "; are these predictions for this data set?"))
    if warn_outside and images is not None and {"width", "height"} <= set(images.columns):
        _warn_outside(file or "predictions", preds, images)


def _warn_outside(file: str, preds: pd.DataFrame, images: pd.DataFrame) -> None:
    """Warn when predictions lie wholly outside their image: a detector cannot predict there, so they
    were most likely made on other images (another data set, or these images at another size)."""
    size = images.drop_duplicates("id").set_index("id")[["width", "height"]].astype(float)
    wh = size.reindex(preds["image_id"]).to_numpy()
    x, y = preds["x"].to_numpy(), preds["y"].to_numpy()
    out = (x >= wh[:, 0]) | (y >= wh[:, 1]) | (x + preds["w"].to_numpy() <= 0) | (y + preds["h"].to_numpy() <= 0)
    if out.any():
        k = int(out.argmax())
        r = preds.iloc[k]
        frame = f"a {wh[k, 0]:g}x{wh[k, 1]:g} frame" if np.isfinite(wh[k]).all() else "a frame of unknown size"
        warnings.warn(f"{file}: {int(out.sum())} of {len(preds)} predictions lie wholly outside their image (first: "
                      f"prediction [{k}], image {int(r['image_id'])}, box [{r['x']:g}, {r['y']:g}, {r['w']:g}, "
                      f"{r['h']:g}] in {frame}): were they made on this data set, at its "
                      "image size?", PredictionsWarning, stacklevel=4)


def where_of(source: str | None) -> str:
    """How messages name the data set: its file, or 'the data set' for one built in memory."""
    return source if source and source != "<memory>" else "the data set"


def _name_keys(file_name: str) -> set[str]:
    """What a prediction may call an image by: its file name, base name, stem, and a numeric stem as the
    number (Ultralytics writes ``image_id = int(stem)`` when the stem is all digits: 000123 -> 123)."""
    p = PurePosixPath(str(file_name).replace("\\", "/"))
    keys = {str(file_name), p.name, p.stem}
    if p.stem.isdigit():
        keys.add(str(int(p.stem)))
    return keys


def match_by_file_name(records: list[dict], images: pd.DataFrame, file: str,
                       own_images: list | None = None) -> list[dict]:
    """``records`` (COCO results) with each ``image_id`` replaced by the id of the image of ``images`` it
    names by file name, stem or numeric stem; ``own_images`` (a predictions file's own COCO ``images``)
    first turns the file's ids into its file names. An id naming no image, or several (a stem shared by
    two files, as in train/a.jpg and val/a.jpg), is a :class:`DatasetError` naming the prediction."""
    lookup: dict[str, list[int]] = {}
    for iid, fn in zip(images["id"], images["file_name"]):
        for k in _name_keys(fn):
            lookup.setdefault(k, []).append(int(iid))
    names = {}
    if own_images is not None:
        names = {im.get("id"): im.get("file_name") for im in own_images if isinstance(im, dict)}
    out = []
    for n, r in enumerate(records):
        if not isinstance(r, dict) or "image_id" not in r:
            out.append(r)  # load_predictions names what is missing
            continue
        key = names.get(r["image_id"], r["image_id"]) if own_images is not None else r["image_id"]
        found = lookup.get(str(key), [])
        if not found and own_images is None and isinstance(key, str):
            found = next((lookup[k] for k in sorted(_name_keys(key)) if k in lookup), [])
        if len(set(found)) != 1:
            fns = images.set_index("id").loc[sorted(set(found)), "file_name"].tolist() if found else []
            why = (f"names {len(set(found))} images ({', '.join(map(str, fns[:3]))}): a file-name stem shared by "
                   "several files cannot tell them apart; key the predictions by file name or image id") if found \
                else "names no image of the data set by file name or stem"
            raise DatasetError(f"{file}: prediction [{n}]: image {key!r} {why}")
        out.append({**r, "image_id": found[0]})
    return out
