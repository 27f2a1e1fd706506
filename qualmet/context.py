"""What a per-frame metric sees: :class:`MetricContext`, the decoded image, the frame's labels and
predictions, and intermediates (grey, HSV, a sampled small image, clipped integer boxes) computed
at most once per frame and shared read-only by every metric of the frame."""
from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Callable

import numpy as np
import pandas as pd

from .errors import QualmetError

SMALL_SIDE = 320  # longest side of MetricContext.small

_GRID_MAPS: dict[tuple[int, int, int], np.ndarray] = {}


def _subsample(image: np.ndarray, s: int) -> np.ndarray:
    """``image[::s, ::s]`` as a contiguous array. cv2.remap with integer nearest-neighbour maps picks
    exactly those pixels, several times faster than numpy's strided copy of 3-byte pixels."""
    h, w = image.shape[:2]
    if image.ndim != 3 or max(h, w) > 32000:  # int16 maps; anything else takes the plain path
        return np.ascontiguousarray(image[::s, ::s])
    key = (h, w, s)
    m = _GRID_MAPS.get(key)
    if m is None:
        oh, ow = -(-h // s), -(-w // s)
        m = np.empty((oh, ow, 2), np.int16)
        m[..., 0] = np.arange(ow, dtype=np.int16) * s
        m[..., 1] = (np.arange(oh, dtype=np.int16) * s)[:, None]
        if len(_GRID_MAPS) > 64:  # a data set of many sizes: keep the memory bounded
            _GRID_MAPS.clear()
        _GRID_MAPS[key] = m
    import cv2

    return cv2.remap(image, m, None, cv2.INTER_NEAREST)


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` marked read-only: what the context shares between metrics cannot be changed by one of them."""
    a.flags.writeable = False
    return a


def private_copy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` that a plugin may change in place without touching ``df``: shallow (cheap)
    under copy-on-write (always on from pandas 3), deep where it is off (pandas 2's default)."""
    major = int(pd.__version__.split(".")[0])
    return df.copy(deep=not (major >= 3 or pd.get_option("mode.copy_on_write") is True))


class _pixel_cache:
    """Like ``functools.cached_property``, for what is computed from the image: computed at most once per
    frame and shared, but every access first checks that the running metric declared ``pixels``."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, ctx: "MetricContext | None", owner: type | None = None) -> Any:
        if ctx is None:
            return self
        ctx._check("pixels")
        v = ctx._shared.get(self.name)
        if v is None:
            v = ctx._shared[self.name] = self.fn(ctx)
        return v


class MetricContext:
    """What a per-frame metric sees: the decoded image (when it needs pixels), the frame's
    annotations and predictions, and shared intermediates computed at most once per frame.

    One context serves every metric of a frame. The runner calls :meth:`begin` before each metric, so
    a metric reads only the image and predictions it declares in ``needs`` (a context made directly,
    as in tests, allows everything). Arrays are read-only and tables copies: no metric can change
    what another sees."""

    def __init__(self, image_id: int, file_name: str, width: int, height: int, annotations: "pd.DataFrame | tuple",
                 predictions: pd.DataFrame | None = None, image: np.ndarray | None = None,
                 boxes: np.ndarray | None = None):
        self.image_id = int(image_id)
        self.file_name = file_name
        self._shared: dict[str, Any] = {}  # intermediates computed from the image
        self._needs: frozenset[str] | None = None  # the running metric's; None: everything allowed
        self._views: dict[str, pd.DataFrame] = {}  # the running metric's copies of the tables
        if isinstance(annotations, tuple):  # (table, start, stop): the runner's lazy row range
            table, a0, a1 = annotations
            self._ann_rows = (table, int(a0), int(a1))
            self._annotations: pd.DataFrame | None = None
            self._n_objects = int(a1) - int(a0)
        else:
            self._annotations = annotations
            self._n_objects = len(annotations)
        self._predictions = predictions
        if image is not None and image.flags.writeable:  # shared by every metric of the frame: read-only
            image = _read_only(image.view())
        self._image = image
        if boxes is not None:  # the runner passes them precomputed (cheaper than from the DataFrame)
            self.__dict__["boxes"] = _read_only(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        if image is not None:  # the decoded size is the truth for pixel work
            height, width = image.shape[:2]
        self.width, self.height = int(width), int(height)

    def begin(self, needs: frozenset[str]) -> None:
        """A new metric runs on this frame: it may read what ``needs`` declares, with fresh table copies."""
        self._needs = needs
        if self._views:
            self._views = {}

    def _check(self, need: str) -> None:
        if self._needs is not None and need not in self._needs:
            what = "uses pixels" if need == "pixels" else "reads ctx.predictions"
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric {what} but does not declare "
                               f"needs={{'{need}'}}")

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) RGB uint8, read-only (every metric of the frame shares it)."""
        self._check("pixels")
        if self._image is None:
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric uses pixels but does not declare needs={{'pixels'}}")
        return self._image

    @property
    def predictions(self) -> pd.DataFrame:
        """The frame's predictions (annotation columns plus ``score``); the running metric's own copy."""
        self._check("predictions")
        if self._predictions is None:
            raise QualmetError(f"image {self.image_id} ({self.file_name}): metric reads ctx.predictions but does not "
                               "declare needs={'predictions'} (or the run has no --predictions)")
        v = self._views.get("predictions")
        if v is None:
            v = self._views["predictions"] = private_copy(self._predictions)
        return v

    @property
    def image_size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def annotations(self) -> pd.DataFrame:
        """The frame's annotation rows; the running metric's own copy (cheap: copy-on-write), so a metric
        that changes it changes nothing another metric sees."""
        v = self._views.get("annotations")
        if v is None:
            if self._annotations is None:  # the runner's lazy row range of the chunk's table
                table, a0, a1 = self._ann_rows
                self._annotations = table.iloc[a0:a1]
            v = self._views["annotations"] = private_copy(self._annotations)
        return v

    @property
    def n_objects(self) -> int:
        return self._n_objects

    @cached_property
    def boxes(self) -> np.ndarray:
        """(N, 4) float xywh boxes of the frame's annotations."""
        a = self.annotations
        if len(a) == 0:
            return _read_only(np.zeros((0, 4)))
        return _read_only(np.stack([a[c].to_numpy(dtype=np.float64) for c in ("x", "y", "w", "h")], axis=1))

    @cached_property
    def boxes_int(self) -> np.ndarray:
        """(N, 4) int xyxy boxes clipped to the image (rounded outward); empty boxes have x1==x2
        (y1==y2): a box of zero width or height covers no pixel, wherever it lies."""
        b = self.boxes
        out = np.empty((len(b), 4))  # a few whole-array operations: this runs for every frame
        np.floor(b[:, :2], out=out[:, :2])
        np.ceil(b[:, :2] + b[:, 2:], out=out[:, 2:])
        lim = np.array([self.width, self.height, self.width, self.height], np.float64)
        np.minimum(np.maximum(out, 0.0, out=out), lim, out=out)
        np.maximum(out[:, 2:], out[:, :2], out=out[:, 2:])
        flat = b[:, 2:] <= 0
        if flat.any():
            out[:, 2:][flat] = out[:, :2][flat]
        return _read_only(out.astype(int))

    @_pixel_cache
    def gray(self) -> np.ndarray:
        """(H, W) uint8 luma (OpenCV's RGB->GRAY)."""
        import cv2

        return _read_only(cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY))

    @_pixel_cache
    def hsv(self) -> np.ndarray:
        """(H, W, 3) uint8 HSV (OpenCV ranges: H 0-179, S and V 0-255)."""
        import cv2

        return _read_only(cv2.cvtColor(self.image, cv2.COLOR_RGB2HSV))

    @cached_property
    def small_stride(self) -> int:
        """Sampling step of :attr:`small`: the smallest integer keeping its longest side <= SMALL_SIDE."""
        return max(1, -(-max(self.width, self.height) // SMALL_SIDE))

    @cached_property
    def small_shape(self) -> tuple[int, int]:
        """(rows, columns) of :attr:`small`, known without building it."""
        s = self.small_stride
        return -(-self.height // s), -(-self.width // s)

    @_pixel_cache
    def small(self) -> np.ndarray:
        """The RGB image sampled on a regular grid (every ``small_stride``-th pixel, no averaging).

        Pixel shares and colour histograms estimated on it are unbiased and several times cheaper;
        averaging (INTER_AREA) would instead mix black and white into grey."""
        s = self.small_stride
        if s == 1:
            return self.image
        return _read_only(_subsample(self.image, s))

    @_pixel_cache
    def small_gray(self) -> np.ndarray:
        """Luma of :attr:`small`: ``gray[::s, ::s]`` (sampled from :attr:`gray`, which frame metrics
        usually need anyway, rather than building :attr:`small`)."""
        s = self.small_stride
        return self.gray if s == 1 else _read_only(self.grid(0, 0, self.width, self.height, s, self.gray))

    @_pixel_cache
    def small_hsv(self) -> np.ndarray:
        """HSV of :attr:`small`."""
        import cv2

        return _read_only(cv2.cvtColor(self.small, cv2.COLOR_RGB2HSV))

    @cached_property
    def small_boxes_int(self) -> np.ndarray:
        """:attr:`boxes_int` in :attr:`small` coordinates (x1, y1 rounded up, x2, y2 rounded up)."""
        s = self.small_stride
        b = -(-self.boxes_int // s)
        h, w = self.small_shape
        return _read_only(np.minimum(b, np.array([w, h, w, h]), out=b))  # boxes_int is already >= 0

    def crop(self, i: int, array: np.ndarray | None = None, max_side: int | None = None) -> np.ndarray:
        """The pixels of box ``i`` (clipped) from ``array`` (default: the RGB image); may be empty.

        With ``max_side``, every k-th pixel is taken so the crop's longest side is at most that."""
        x1, y1, x2, y2 = self.boxes_int[i]
        a = (self.image if array is None else array)
        if max_side:
            k = max(1, -(-max(x2 - x1, y2 - y1) // max_side))
            if k > 1:
                return self.grid(x1, y1, x2, y2, k, a)
        return a[y1:y2, x1:x2]

    def grid(self, x1: int, y1: int, x2: int, y2: int, k: int, array: np.ndarray | None = None) -> np.ndarray:
        """``array[y1:y2:k, x1:x2:k]`` (default: the RGB image) as a contiguous array: every k-th
        pixel of a region. Colour pixels are copied as 3-byte units, twice as fast as numpy's copy
        of the strided view."""
        a = self.image if array is None else array
        x1, y1 = max(0, x1), max(0, y1)  # a negative start would count from the far end
        if k == 1 or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or not a.flags.c_contiguous:
            return np.ascontiguousarray(a[y1:y2:k, x1:x2:k])
        h, w = a.shape[:2]
        c = np.ascontiguousarray(a.reshape(h, w * 3).view("V3")[y1:y2:k, x1:x2:k])
        return c.view(np.uint8).reshape(c.shape[0], c.shape[1], 3)

    def nan_per_object(self) -> np.ndarray:
        return np.full(self.n_objects, math.nan)
