"""Box conversions and IoU, vectorised over numpy arrays of shape (N, 4).

Part of the public plugin API (metric plugins may import it; its source is part of every metric's
cache key). Conventions: COCO ``xywh`` (top-left corner, width, height, pixels); ``xyxy`` (corners, pixels);
YOLO ``cxcywh`` normalised by image width and height.
"""
from __future__ import annotations

import numpy as np

__all__ = ["xywh_to_xyxy", "xyxy_to_xywh", "xywh_to_yolo", "yolo_to_xywh", "iou_matrix", "coverage_matrix", "clip_xywh",
           "iou_pairs", "frame_pairs"]


def _arr(b) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    return a.reshape(-1, 4) if a.ndim == 1 else a


def xywh_to_xyxy(b) -> np.ndarray:
    a = _arr(b)
    return np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], axis=1)


def xyxy_to_xywh(b) -> np.ndarray:
    a = _arr(b)
    return np.stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], axis=1)


def xywh_to_yolo(b, width, height) -> np.ndarray:
    """Pixel xywh -> normalised (cx, cy, w, h); width/height may be scalars or per-box arrays."""
    a = _arr(b)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    return np.stack([(a[:, 0] + a[:, 2] / 2) / w, (a[:, 1] + a[:, 3] / 2) / h, a[:, 2] / w, a[:, 3] / h], axis=1)


def yolo_to_xywh(b, width, height) -> np.ndarray:
    """Normalised (cx, cy, w, h) -> pixel xywh."""
    a = _arr(b)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    bw, bh = a[:, 2] * w, a[:, 3] * h
    return np.stack([a[:, 0] * w - bw / 2, a[:, 1] * h - bh / 2, bw, bh], axis=1)


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For xyxy boxes: (pairwise intersection areas (len(a), len(b)), areas of a, areas of b)."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter, area_a, area_b


def iou_matrix(a_xywh, b_xywh) -> np.ndarray:
    """Pairwise IoU between two sets of xywh boxes, shape (len(a), len(b)). Empty boxes give 0."""
    a = xywh_to_xyxy(a_xywh)
    b = xywh_to_xyxy(b_xywh)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    inter, area_a, area_b = _overlaps(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.clip(iou, 0.0, 1.0)


def coverage_matrix(a_xywh, b_xywh) -> np.ndarray:
    """Share of each ``a`` box covered by each ``b`` box (intersection over the ``a`` box's area), shape
    (len(a), len(b)): COCO's overlap of a detection with a crowd region. Empty ``a`` boxes give 0."""
    a = xywh_to_xyxy(a_xywh)
    b = xywh_to_xyxy(b_xywh)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    inter, area_a, _ = _overlaps(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(area_a[:, None] > 0, inter / area_a[:, None], 0.0), 0.0, 1.0)


def clip_xywh(b, width: float, height: float) -> np.ndarray:
    """Clip xywh boxes to the image rectangle (boxes fully outside become zero-size)."""
    xyxy = xywh_to_xyxy(b)
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
    return xyxy_to_xywh(xyxy)


def iou_pairs(a_xywh, b_xywh) -> np.ndarray:
    """Element-wise IoU of row i of ``a`` with row i of ``b`` (both (N, 4) xywh); empty boxes give 0."""
    a, b = xywh_to_xyxy(a_xywh), xywh_to_xyxy(b_xywh)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(union > 0, inter / union, 0.0), 0.0, 1.0)


def frame_pairs(annotations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair of distinct boxes that share a frame, for per-object neighbour metrics.

    ``annotations`` is a DataFrame with ``image_id, x, y, w, h``. Returns ``(i, A, B)``: ``i`` the
    position (0..len-1) of the first box of each pair, ``A`` and ``B`` the two boxes as (P, 4) xywh.
    """
    a = annotations[["image_id", "x", "y", "w", "h"]].reset_index(drop=True)
    a["i"] = np.arange(len(a))
    p = a.merge(a, on="image_id", suffixes=("", "_o"))
    p = p[p["i"] != p["i_o"]]
    return (p["i"].to_numpy(), p[["x", "y", "w", "h"]].to_numpy(dtype=np.float64),
            p[["x_o", "y_o", "w_o", "h_o"]].to_numpy(dtype=np.float64))
