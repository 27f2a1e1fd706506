"""Small JPEG pictures for the report: one crop per object (box drawn, some context around it) and
one downscaled view per frame, each image decoded once for all of them; plus frames with
predictions against labels for the model section."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ImageError
from .output import Output

OBJECT_PX = 128  # object crops are OBJECT_PX x OBJECT_PX
FRAME_PX = 256  # frame views fit in FRAME_PX x FRAME_PX
CONTEXT = 0.4  # margin around a box, as a share of its longer side, on each side
JPEG_QUALITY = 80
PAD = (128, 128, 128)  # outside the image
TARGET = (255, 40, 40)  # the object a crop is about
OTHER = (255, 214, 0)  # the frame's other boxes
CLEAN, INJECTED, DELETED = (60, 220, 60), (255, 40, 40), (255, 214, 0)
PRED = (255, 140, 0)


@dataclass
class Thumbs:
    """Relative paths of the written thumbnails and the frames that could not be read."""

    objects: dict[int, str] = field(default_factory=dict)  # annotation id -> assets/... .jpg
    frames: dict[int, str] = field(default_factory=dict)  # image id -> assets/... .jpg
    failed: list[dict] = field(default_factory=list)  # image_id, file_name, reason


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _rect(img: np.ndarray, box, scale: float, ox: float, oy: float, color, thick: int) -> None:
    import cv2

    x, y, w, h = (float(v) for v in box)
    p0 = (int(round((x - ox) * scale)), int(round((y - oy) * scale)))
    p1 = (int(round((x + w - ox) * scale)) - 1, int(round((y + h - oy) * scale)) - 1)
    cv2.rectangle(img, p0, p1, color, thick, cv2.LINE_AA)


def object_crop(img: np.ndarray, box, others: np.ndarray, px: int = OBJECT_PX, suggestion=None) -> np.ndarray:
    """A square crop centred on ``box`` (x, y, w, h) with CONTEXT around it, grey beyond the image
    border, resized to ``px``; the box drawn in red, the frame's other boxes thin in yellow, and a
    ``suggestion`` (a box a reviewer may want instead) in orange, the crop then covering both (``box``
    None: the suggestion alone, e.g. a missing box)."""
    H, W = img.shape[:2]
    x, y, w, h = (float(v) for v in (box if box is not None else suggestion))
    if suggestion is not None:  # the crop covers the box and the suggested box
        sx, sy, sw, sh = (float(v) for v in suggestion)
        x0_, y0_ = min(x, sx), min(y, sy)
        x, y, w, h = x0_, y0_, max(x + w, sx + sw) - x0_, max(y + h, sy + sh) - y0_
    side = max(max(w, h) * (1 + 2 * CONTEXT), 16.0)
    x0, y0 = int(math.floor(x + w / 2 - side / 2)), int(math.floor(y + h / 2 - side / 2))
    s = int(math.ceil(side))
    canvas = np.empty((s, s, 3), np.uint8)
    canvas[:] = PAD
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(W, x0 + s), min(H, y0 + s)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = img[iy0:iy1, ix0:ix1]
    out = np.ascontiguousarray(_resize(canvas, px, px))
    scale = px / s
    for b in others:
        _rect(out, b, scale, x0, y0, OTHER, 1)
    if suggestion is not None:
        _rect(out, suggestion, scale, x0, y0, PRED, 2)
    if box is not None:
        _rect(out, box, scale, x0, y0, TARGET, 2)
    return out


def frame_view(img: np.ndarray, boxes: np.ndarray, colors: list, px: int = FRAME_PX,
               deleted: np.ndarray | None = None) -> np.ndarray:
    """The whole frame fitted into ``px`` x ``px`` with its boxes drawn (``deleted`` ones dashed)."""
    H, W = img.shape[:2]
    scale = min(px / W, px / H)
    out = np.ascontiguousarray(_resize(img, int(round(W * scale)), int(round(H * scale))))
    for b, c in zip(boxes, colors):
        _rect(out, b, scale, 0, 0, c, 1 if px <= FRAME_PX else 2)
    for b in (deleted if deleted is not None else []):
        _dashed(out, b, scale, DELETED)
    return out


def _dashed(img: np.ndarray, box, scale: float, color, dash: int = 4) -> None:
    import cv2

    x, y, w, h = (float(v) * scale for v in box)
    pts = [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        n = max(1, int(max(abs(bx - ax), abs(by - ay)) // dash))
        for k in range(0, n, 2):
            t0, t1 = k / n, min(k + 1, n) / n
            cv2.line(img, (int(ax + (bx - ax) * t0), int(ay + (by - ay) * t0)),
                     (int(ax + (bx - ax) * t1), int(ay + (by - ay) * t1)), color, 1)


def make_thumbnails(image_root, objects: pd.DataFrame, frames: pd.DataFrame, out: Output,
                    error_types: pd.Series | None = None, manifest: pd.DataFrame | None = None,
                    progress: bool = False) -> Thumbs:
    """Write one crop per object row and one view per frame row under ``assets/thumbs``; each image is
    decoded once. Boxes come from the metric tables; with a manifest, frame views colour injected
    boxes red and show deleted ones dashed. An unreadable image is recorded and skipped."""
    from ..imageio import read_image
    from ..log import bar
    from ..paths import safe_join

    th = Thumbs()
    boxes_all = objects[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    ids_all = objects["annotation_id"].to_numpy(dtype=np.int64)
    injected = (error_types.notna().to_numpy() if error_types is not None else np.zeros(len(objects), bool))
    by_image = {int(k): v for k, v in objects.groupby("image_id", sort=False).indices.items()}
    deleted: dict[int, np.ndarray] = {}
    if manifest is not None and len(manifest):
        miss = manifest[manifest["type"] == "missing"]
        for iid, g in miss.groupby("image_id"):
            deleted[int(iid)] = g[["orig_x", "orig_y", "orig_w", "orig_h"]].to_numpy(dtype=np.float64)
    path_cache: dict = {}  # resolved image folders, for this pass
    for fr in bar(frames[["image_id", "file_name"]].itertuples(index=False), total=len(frames),
                  desc="thumbnails", unit="frame", enabled=progress):
        iid = int(fr.image_id)
        try:
            if image_root is None:
                raise ImageError("no image root")
            img = read_image(safe_join(image_root, str(fr.file_name), cache=path_cache))
        except Exception as exc:  # one unreadable frame never loses the rest
            th.failed.append({"image_id": iid, "file_name": str(fr.file_name), "reason": str(exc)})
            continue
        rows = by_image.get(iid, np.zeros(0, dtype=np.int64))
        boxes = boxes_all[rows]
        for k, r in enumerate(rows):
            aid = int(ids_all[r])
            crop = object_crop(img, boxes[k], np.delete(boxes, k, axis=0))
            th.objects[aid] = out.write_bytes(f"assets/thumbs/o{aid}.jpg", encode_jpeg(crop))
        colors = [INJECTED if injected[r] else CLEAN for r in rows]
        view = frame_view(img, boxes, colors, deleted=deleted.get(iid))
        th.frames[iid] = out.write_bytes(f"assets/thumbs/f{iid}.jpg", encode_jpeg(view))
    return th


def prediction_view(img: np.ndarray, gt: np.ndarray, preds: np.ndarray, scores: np.ndarray,
                    px: int = 360) -> np.ndarray:
    """A frame with its labels (green) and predictions (orange, score written) for the model section."""
    import cv2

    H, W = img.shape[:2]
    scale = min(px / W, px / H)
    out = frame_view(img, gt, [CLEAN] * len(gt), px=px)
    for b, s in zip(preds, scores):
        _rect(out, b, scale, 0, 0, PRED, 2)
        x, y = int(b[0] * scale) + 2, max(int(b[1] * scale) - 3, 10)
        cv2.putText(out, f"{s:.2f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, f"{s:.2f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, PRED, 1, cv2.LINE_AA)
    return out
