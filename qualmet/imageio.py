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
    return decode_image(read_file(path), path)


def read_file(path: str | os.PathLike) -> np.ndarray:
    """An image file's bytes (uint8), or ImageError naming the file: missing, a folder, unreadable, empty."""
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
    return data


def decode_image(data: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """:func:`read_image` on bytes already read (``path`` names them in errors)."""
    flag = cv2.IMREAD_COLOR if _RGB_FLAG is None else _RGB_FLAG
    img = cv2.imdecode(data, flag)
    if img is None and truncated_jpeg(data):
        # OpenCV refuses a JPEG cut short; with the end-of-image marker appended it decodes what is
        # there (the missing rows come out grey), as image viewers do. validate() warns about these.
        img = cv2.imdecode(np.concatenate([data, np.frombuffer(b"\xff\xd9", np.uint8)]), flag)
    if img is None:
        raise ImageError(f"{Path(path)}: not a decodable image ({data.size} bytes)")
    return img if _RGB_FLAG is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def truncated_jpeg(data: bytes | np.ndarray) -> bool:
    """True when ``data`` is a JPEG whose main image ends before its end-of-image marker. The markers
    are walked from the start (an EXIF thumbnail's own end marker lies inside a segment that is skipped
    whole), so bytes some cameras append after the end marker do not count as truncation."""
    data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return False  # not a marker where one must be: a damaged file, not a short one (decoding says more)
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # end of image
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker that is not stuffing or RSTn
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return True
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    i = j + (1 if nxt == 0xFF else 2)
                    continue
                i = j
                break
    return True


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
