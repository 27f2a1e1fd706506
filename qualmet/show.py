"""A contact sheet of random frames with their boxes drawn, to look at labels (and injected noise) by eye.

With a noise manifest, boxes are coloured by what happened to them: clean green, changed or added red
(labelled with the error type), deleted (``missing``) dashed yellow at their true position.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .dataset import Dataset
from .errors import QualmetError

CELL_W, CELL_H = 320, 240  # one frame, letterboxed
LEGEND_H = 28
GREEN, RED, YELLOW, GREY = (40, 200, 40), (230, 30, 30), (250, 220, 0), (60, 60, 60)  # RGB


def grid_size(n: int, cols: int = 5, noise: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``n`` frames in ``cols`` columns (legend line included;
    with ``noise``, at least two cells wide so the three-colour legend fits)."""
    cols = max(1, min(cols, n)) if n else 1
    rows = math.ceil(n / cols) if n else 1
    return max(cols, 2 if noise else 1) * CELL_W, rows * CELL_H + LEGEND_H


FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp"}  # --out suffix -> encoder


def show_grid(ds: Dataset, out_png: str | os.PathLike, n: int = 20, seed: int = 0,
              manifest: pd.DataFrame | None = None, cols: int = 5, unreadable: list | None = None) -> Path:
    """Draw ``n`` random frames (seeded) with boxes and class names into one PNG; return its path.

    ``ds`` is the data set shown (the noisy one when ``manifest`` is given). A frame that cannot be
    read becomes a grey cell naming the problem; the rest are still drawn. Each such frame is
    appended to ``unreadable`` as ``(file_name, reason)`` when a list is given.
    """
    import cv2

    if n < 1 or cols < 1:
        raise QualmetError(f"show: n and cols must be at least 1, got n={n}, cols={cols}")
    if not len(ds.images):
        raise QualmetError(f"{ds.source}: no images to show")
    fmt = FORMATS.get(Path(out_png).suffix.lower())
    if fmt is None:
        raise QualmetError(f"{out_png}: the sheet is written as PNG, JPEG or WebP; name it .png, .jpg or .webp")
    if manifest is not None:
        from .manifest import manifest_mismatch

        why = manifest_mismatch(ds, manifest)
        if why:  # it would paint other boxes red and draw deletions that are not there
            raise QualmetError(f"{manifest.attrs.get('source', 'the manifest')}: does not describe {ds.source} "
                               f"(show the noisy data set it was written with): {why}")
    rng = np.random.default_rng(seed)
    n = min(n, len(ds.images))
    picks = ds.images.iloc[np.sort(rng.choice(len(ds.images), size=n, replace=False))]
    by_image = ds.annotations_by_image()
    names = ds.category_names
    status, deleted = _noise_lookup(manifest)
    W, H = grid_size(n, cols, noise=manifest is not None)
    ncols = max(1, min(cols, n))
    canvas = np.full((H, W, 3), 255, dtype=np.uint8)
    for k, (_, im) in enumerate(picks.iterrows()):
        cell = _cell(ds, im, by_image.get(int(im["id"]), ds.annotations.iloc[0:0]), names, status,
                     deleted.get(int(im["id"]), []), unreadable)
        r, c = divmod(k, ncols)
        canvas[r * CELL_H:(r + 1) * CELL_H, c * CELL_W:(c + 1) * CELL_W] = cell
    _legend(canvas, manifest is not None, ds.source)
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise QualmetError(f"{out_png}: encoding the sheet as {fmt} failed")
    return atomic.write_bytes(out_png, buf.tobytes())


def _noise_lookup(manifest: pd.DataFrame | None) -> tuple[dict[int, str], dict[int, list[tuple]]]:
    """Annotation id -> error type for changed/added boxes; image id -> [(box, category)] of deleted boxes."""
    status: dict[int, str] = {}
    deleted: dict[int, list[tuple]] = {}
    if manifest is None or not len(manifest):
        return status, deleted
    for r in manifest.itertuples(index=False):
        if r.type == "missing":
            deleted.setdefault(int(r.image_id), []).append(
                ((r.orig_x, r.orig_y, r.orig_w, r.orig_h), int(r.orig_category_id)))
        else:
            status[int(r.annotation_id)] = str(r.type)
    return status, deleted


def _cell(ds: Dataset, im: pd.Series, anns: pd.DataFrame, names: dict[int, str], status: dict[int, str],
          deleted: list[tuple], unreadable: list | None = None) -> np.ndarray:
    import cv2

    from .imageio import read_image

    cell = np.full((CELL_H, CELL_W, 3), 235, dtype=np.uint8)
    title = str(im["file_name"])
    try:
        img = read_image(ds.image_path(str(im["file_name"])))
    except Exception as exc:  # one unreadable frame must not lose the sheet
        if unreadable is not None:
            unreadable.append((title, str(exc)))
        _text(cell, title, (4, 14), GREY, outline=False)
        for i in range(0, len(str(exc)), 48):
            _text(cell, str(exc)[i:i + 48], (4, 40 + 16 * (i // 48)), RED)
        return cell
    h, w = img.shape[:2]
    s = min(CELL_W / w, (CELL_H - 18) / h)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    ox, oy = (CELL_W - nw) // 2, 18 + (CELL_H - 18 - nh) // 2
    cell[oy:oy + nh, ox:ox + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)

    def pts(b) -> tuple[tuple[int, int], tuple[int, int]]:
        """Corners in cell pixels, held just outside the cell (a box far off the image would overflow
        OpenCV's int coordinates; an edge past the cell is not drawn either way)."""
        x, y, bw, bh = (float(v) for v in b)

        def px(v: float, hi: int) -> int:
            return int(round(min(max(v, -1.0), float(hi))))

        return ((px(ox + x * s, CELL_W), px(oy + y * s, CELL_H)),
                (px(ox + (x + bw) * s, CELL_W), px(oy + (y + bh) * s, CELL_H)))

    for box, cat in deleted:
        p0, p1 = pts(box)
        _dashed_rect(cell, p0, p1, YELLOW)
        _text(cell, f"{names.get(cat, cat)} [missing]", (p0[0] + 2, max(p0[1] - 3, 28)), YELLOW)
    for a in anns.itertuples(index=False):
        kind = status.get(int(a.id))
        color = RED if kind else GREEN
        p0, p1 = pts((a.x, a.y, a.w, a.h))
        cv2.rectangle(cell, p0, p1, color, 2)
        label = str(names.get(int(a.category_id), a.category_id)) + (f" [{kind}]" if kind else "")
        _text(cell, label, (p0[0] + 2, max(p0[1] - 3, 28)), color)
    cell[:18] = 255
    _text(cell, f"{title} ({len(anns)} boxes)", (4, 13), GREY, outline=False)
    return cell


def _text(img: np.ndarray, s: str, org: tuple[int, int], color: tuple[int, int, int], outline: bool = True) -> None:
    import cv2

    if outline:  # dark outline so coloured labels read on any photo
        cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)


def _dashed_rect(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color: tuple[int, int, int],
                 dash: int = 6) -> None:
    import cv2

    (x0, y0), (x1, y1) = p0, p1
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for t in range(0, max(length, 1), 2 * dash):
            u, v = t / max(length, 1), min(t + dash, length) / max(length, 1)
            q0 = (int(a[0] + (b[0] - a[0]) * u), int(a[1] + (b[1] - a[1]) * u))
            q1 = (int(a[0] + (b[0] - a[0]) * v), int(a[1] + (b[1] - a[1]) * v))
            cv2.line(img, q0, q1, color, 2)


def _legend(canvas: np.ndarray, with_noise: bool, source: str) -> None:
    y = canvas.shape[0] - LEGEND_H // 2 + 4
    canvas[-LEGEND_H:] = 40  # dark band: every box colour reads on it
    if with_noise:
        _text(canvas, "green: clean", (6, y), GREEN, outline=False)
        _text(canvas, "red: changed or added [type]", (110, y), (255, 90, 90), outline=False)
        _text(canvas, "yellow dashed: deleted (missing)", (330, y), YELLOW, outline=False)
    else:
        _text(canvas, f"{Path(source).name}: boxes in green", (6, y), GREEN, outline=False)
