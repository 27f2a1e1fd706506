"""Decoding images into RGB uint8 arrays, once, with defined results for odd inputs.

Grayscale and palette images are promoted to 3 channels, alpha is dropped, 16-bit images are
scaled to 8 bits, and the EXIF orientation is honoured (OpenCV's IMREAD_COLOR does all of that).
A JPEG cut short (no end-of-image marker) decodes as far as its data goes.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

cv2.setNumThreads(1)  # decoding is parallelised over frames by the runner, not inside OpenCV

# libjpeg-turbo writes RGB directly with this flag (OpenCV >= 4.10): the same pixels as decoding to
# BGR and swapping the channels, without the extra pass over the image (~5% of the decode time)
_RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", None)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an (H, W, 3) RGB uint8 array or raise ImageError naming the file."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{p}: image file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read image file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(f"{p}: image file is empty (0 bytes)")
    flag = cv2.IMREAD_COLOR if _RGB_FLAG is None else _RGB_FLAG
    img = cv2.imdecode(data, flag)
    if img is None and _is_truncated_jpeg(data):
        # OpenCV refuses a JPEG cut short; with the end-of-image marker appended it decodes what is
        # there (the missing rows come out grey), as image viewers do. validate() warns about these.
        img = cv2.imdecode(np.concatenate([data, np.frombuffer(b"\xff\xd9", np.uint8)]), flag)
    if img is None:
        raise ImageError(f"{p}: not a decodable image ({data.size} bytes)")
    return img if _RGB_FLAG is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """JPEG signature at the start but no end-of-image marker at the end."""
    head = data[:2].tobytes()
    tail = data[-64:].tobytes().rstrip(b"\x00\r\n ")
    return head == b"\xff\xd8" and not tail.endswith(b"\xff\xd9")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) after EXIF orientation, reading only the header when possible."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with _header_only(Image), Image.open(p) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # malformed EXIF: size without rotation
                orientation = 1
    except FileNotFoundError:
        raise ImageError(f"{p}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{p}: not a readable image ({exc})") from None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return int(w), int(h)


@contextlib.contextmanager
def _header_only(Image):  # noqa: N803 (the PIL.Image module)
    """PIL refuses to open images over ~179 megapixels (a guard against decompression bombs) and warns
    above ~89; only the header is read here, so neither applies (decoding goes through OpenCV)."""
    import warnings

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit
