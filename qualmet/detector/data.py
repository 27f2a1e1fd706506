"""A torch Dataset over a qualmet Dataset: each image decoded once, letterboxed to the recipe's
square input (top-left anchored, aspect kept), boxes as xyxy tensors with contiguous labels 1..K,
and ``iscrowd = 1`` annotations as ``target["ignore"]`` regions placed exactly like the boxes (the
SSD's loss ignores the anchors there, see ignore.py; they are not learnt as boxes).

Augmentation is a horizontal flip decided by the sampler, so batches are a pure function of
(seed, iteration): a resumed training sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..dataset import Dataset
from ..imageio import read_image

CACHE_LIMIT_BYTES = 2 << 30  # decoded, letterboxed frames kept in memory (all data sets together) below this total


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``img`` (H, W, 3) so its longer side is ``size`` and pad right/bottom with grey to a
    ``size`` square; returns the square and the scale per axis, (sx, sy): original pixels * scale =
    input pixels. The resized sides are whole pixels, so the two scales differ slightly when the
    shorter side does not scale to a whole number (a 3000x100 frame at 256: 9 rows, sy = 0.09, not 0.0853)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.full((size, size, 3), 114, dtype=np.uint8)
    out[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=interp)
    return out, (nw / w, nh / h)


def unletterbox(boxes: torch.Tensor, scale: tuple[float, float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Model-input xyxy boxes back to original pixels, clipped to the ``width`` x ``height`` image (the
    letterbox padding lies beyond it): float64 (N, 4) xywh and which of them keep an area (a box
    found wholly in the padding clips to zero width or height and is no detection)."""
    sx, sy = scale
    b = boxes.float().cpu().numpy().astype(np.float64).reshape(-1, 4) / np.array([sx, sy, sx, sy])
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    return xywh, (xywh[:, 2] > 0) & (xywh[:, 3] > 0)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1] (the model's transform normalises)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


class FrameCache:
    """Letterboxed uint8 frames shared by every :class:`DetectionData` (and ``predict_dataset``) of
    the process, least recently used first out beyond ``limit_bytes``.

    An experiment trains many arms on subsets of the same frames and predicts the same test split
    after each; without a shared cache each arm decoded and resized them again. A frame is keyed by
    its file's device, inode, modification time and byte size and the input side, so a file
    rewritten in place is decoded afresh. Stored arrays are never modified (flips and tensors are copies).
    """

    def __init__(self, limit_bytes: int = CACHE_LIMIT_BYTES):
        self.limit = int(limit_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple, tuple[np.ndarray, tuple[float, float], tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()  # a threaded DataLoader or executor may share it

    def get(self, path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        """The letterboxed frame of ``path`` at ``size``, its scale per axis and the original (height,
        width), decoded at most once while it stays cached."""
        try:
            st = os.stat(path)
        except OSError:
            st = None  # read_image below raises the ImageError that names the file
        k = None if st is None else (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, int(size))
        with self._lock:
            hit = self._items.get(k) if k is not None else None
            if hit is not None:
                self._items.move_to_end(k)
                self.hits += 1
                return hit
        img = read_image(path)
        boxed, scale = letterbox(img, size)
        out = (boxed, scale, (int(img.shape[0]), int(img.shape[1])))
        with self._lock:
            self.misses += 1
            if k is not None and k not in self._items and boxed.nbytes <= self.limit:
                self._items[k] = out
                self.nbytes += boxed.nbytes
                while self.nbytes > self.limit:
                    _, old = self._items.popitem(last=False)
                    self.nbytes -= old[0].nbytes
        return out

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = self.hits = self.misses = 0


FRAMES = FrameCache()


class DetectionData(torch.utils.data.Dataset):
    """Letterboxed frames and xyxy targets. Index with ``i`` or ``(i, flip)``.

    Frames come from the process-wide :data:`FRAMES` cache unless ``cache`` is False (then each
    access decodes the file again)."""

    def __init__(self, ds: Dataset, size: int, cache: bool | None = None):
        self.ds = ds
        self.size = int(size)
        self.cat_ids = [int(c) for c in ds.categories["id"]]
        self.label_of = {c: k + 1 for k, c in enumerate(self.cat_ids)}  # 0 is background
        self.image_ids = [int(i) for i in ds.images["id"]]
        self.file_names = [str(f) for f in ds.images["file_name"]]
        self.sizes = [(int(w), int(h)) for w, h in zip(ds.images["width"], ds.images["height"])]  # original pixels
        by_img = ds.annotations_by_image()
        self.boxes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.ignores: list[np.ndarray] = []  # iscrowd = 1: regions the loss ignores (detector/ignore.py)
        for i in self.image_ids:
            a = by_img[i]
            a = a[(a["w"] > 0) & (a["h"] > 0)] if len(a) else a
            crowd = a["iscrowd"].to_numpy() != 0 if len(a) else np.zeros(0, bool)
            self.ignores.append(_xyxy(a[crowd]))
            a = a[~crowd]
            self.boxes.append(_xyxy(a))
            self.labels.append(np.array([self.label_of[int(c)] for c in a["category_id"]], dtype=np.int64))
        self._cache = FRAMES if cache is None or cache else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def frame(self, i: int) -> tuple[np.ndarray, tuple[float, float]]:
        """The letterboxed frame ``i`` and its scale per axis (decoded once per process while cached)."""
        path = self.ds.image_path(self.file_names[i])
        if self._cache is None:
            return letterbox(read_image(path), self.size)
        return self._cache.get(path, self.size)[:2]

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, flip = (key if isinstance(key, tuple) else (key, False))
        img, scale = self.frame(int(i))
        boxes, keep = self._place(self.boxes[i], scale, flip)
        ignore, keep_ignore = self._place(self.ignores[i], scale, flip)
        if flip:
            img = img[:, ::-1]
        target = {"boxes": torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(self.labels[i][keep], dtype=torch.int64),
                  "image_id": torch.tensor(self.image_ids[i]),
                  "ignore": torch.as_tensor(ignore[keep_ignore], dtype=torch.float32).reshape(-1, 4)}
        return to_tensor(img), target

    def _place(self, boxes: np.ndarray, scale: tuple[float, float], flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Original-pixel xyxy boxes in the letterboxed (and flipped) input, clipped to it, and which
        of them keep at least 1 px of width and height there."""
        sx, sy = scale
        boxes = np.clip(boxes * np.array([sx, sy, sx, sy]), 0, self.size)
        if flip:
            boxes = np.stack([self.size - boxes[:, 2], boxes[:, 1], self.size - boxes[:, 0], boxes[:, 3]], axis=1)
        return boxes, (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)


class IterationSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) for iterations ``start`` .. ``stop`` - 1: epoch ``e`` is the
    permutation drawn from ``default_rng([seed, e])``, flips from ``default_rng([seed, e, 1])``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, hflip: float):
        self.n, self.b, self.seed, self.start, self.stop, self.hflip = n, batch_size, seed, start, stop, hflip

    def _epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        perm = np.random.default_rng([self.seed, e]).permutation(self.n)
        flips = np.random.default_rng([self.seed, e, 1]).random(self.n) < self.hflip
        return perm, flips

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for it in range(self.start, self.stop):
            batch = []
            for pos in range(it * self.b, (it + 1) * self.b):
                e, j = divmod(pos, self.n)
                if e not in cache:
                    cache.clear()
                    cache[e] = self._epoch(e)
                perm, flips = cache[e]
                batch.append((int(perm[j]), bool(flips[j])))
            yield batch


def _xyxy(a) -> np.ndarray:
    """(N, 4) float64 xyxy boxes of an annotations frame's x, y, w, h."""
    xywh = a[["x", "y", "w", "h"]].to_numpy(np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def collate(batch: Sequence) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def split_images(image_ids: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split by image: (train ids, held-out ids), held-out ~``fraction`` of the frames."""
    ids = sorted(int(i) for i in image_ids)
    if fraction <= 0 or len(ids) < 2:
        return ids, []
    n_val = min(len(ids) - 1, max(1, round(len(ids) * fraction)))
    perm = np.random.default_rng([seed, 7]).permutation(len(ids))
    val = sorted(ids[k] for k in perm[:n_val])
    vs = set(val)
    return [i for i in ids if i not in vs], val
