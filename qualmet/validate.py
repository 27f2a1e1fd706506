"""Data set validation: every problem at once, each naming the file and the image or annotation."""
from __future__ import annotations

import os

import numpy as np

from .dataset import Dataset
from .errors import ImageError, Problem
from .imageio import decode_image, read_file, truncated_jpeg


def validate(ds: Dataset, check_images: bool = True, decode: bool = True) -> list[Problem]:
    """Check a loaded data set; returns load-time problems (``ds.skipped``) plus what is found here.

    Errors: missing/undecodable image files, unsafe file names, two image records naming one file,
    width/height that disagree with the image, boxes with non-positive size or entirely outside the image. Warnings (fixable): boxes that
    stick out of the image (clip), truncated JPEGs (decoded as far as the data goes), a data set with
    no images or no boxes at all.
    """
    problems = list(ds.skipped)
    src = ds.source
    if len(ds.images) == 0:
        problems.append(Problem("warning", src, "", "the data set has no images"))
    elif len(ds.annotations) == 0:
        problems.append(Problem("warning", src, "", "the data set has no annotations (boxes)"))
    img_by_id = ds.images.set_index("id")
    names = ds.images["file_name"]
    for fn, ids in ds.images.loc[names.duplicated(keep=False), "id"].groupby(names).groups.items():
        shown = ", ".join(str(int(ds.images.at[i, "id"])) for i in ids)
        problems.append(Problem("error", src, f"images {shown}", f"{len(ids)} image records name the same file {fn!r} "
                                "(their boxes would mix; exports that name files by stem lose all but one)"))

    cat_names = ds.categories["name"].astype(str)
    for name, ids in ds.categories.loc[cat_names.duplicated(keep=False), "id"].groupby(cat_names).groups.items():
        shown = ", ".join(str(int(ds.categories.at[i, "id"])) for i in ids)
        problems.append(Problem("warning", src, f"categories {shown}", f"{len(ids)} categories share the name "
                                f"{name!r} (tables and exports that go by name would merge them)"))

    def item_name(image_id: int) -> str:
        return f"image {image_id} ({img_by_id.at[image_id, 'file_name']})"

    a = ds.annotations
    if len(a):
        wh = img_by_id.loc[a["image_id"], ["width", "height"]].to_numpy(dtype=np.float64)
        x, y, w, h = (a[c].to_numpy(dtype=np.float64) for c in ("x", "y", "w", "h"))
        x2, y2 = x + w, y + h
        for k in np.flatnonzero((w <= 0) | (h <= 0)):
            problems.append(Problem("error", src, f"annotation {a['id'].iat[k]} ({item_name(a['image_id'].iat[k])})",
                                    f"box has non-positive size: w={w[k]:g}, h={h[k]:g}"))
        outside = (x2 <= 0) | (y2 <= 0) | (x >= wh[:, 0]) | (y >= wh[:, 1])
        stick_out = np.maximum.reduce([-x, -y, x2 - wh[:, 0], y2 - wh[:, 1], np.zeros_like(x)])
        for k in np.flatnonzero(outside & (w > 0) & (h > 0)):
            problems.append(Problem("error", src, f"annotation {a['id'].iat[k]} ({item_name(a['image_id'].iat[k])})",
                                    f"box [{x[k]:g}, {y[k]:g}, {w[k]:g}, {h[k]:g}] lies entirely outside the "
                                    f"{int(wh[k, 0])}x{int(wh[k, 1])} image"))
        for k in np.flatnonzero(~outside & (stick_out > 0.5) & (w > 0) & (h > 0)):
            problems.append(Problem("warning", src, f"annotation {a['id'].iat[k]} ({item_name(a['image_id'].iat[k])})",
                                    f"box [{x[k]:g}, {y[k]:g}, {w[k]:g}, {h[k]:g}] sticks out of the "
                                    f"{int(wh[k, 0])}x{int(wh[k, 1])} image by up to {stick_out[k]:.1f} px (fixable by clipping)"))
    if check_images:
        problems.extend(_check_images(ds, decode))
    return problems


def _check_images(ds: Dataset, decode: bool) -> list[Problem]:
    from .imageio import image_size

    out: list[Problem] = []
    if ds.image_root is None:
        return [Problem("error", ds.source, "", "no image root: pass --images DIR")]
    first_of: dict[str, tuple[int, str]] = {}  # the real file -> the first record naming it
    for im in ds.images.itertuples(index=False):
        item = f"image {im.id} ({im.file_name})"
        try:
            path = ds.image_path(im.file_name)
        except ImageError as exc:  # unsafe file name: refused, never opened
            out.append(Problem("error", ds.source, item, str(exc)))
            continue
        real = os.path.realpath(path)
        other = first_of.setdefault(real, (int(im.id), str(im.file_name)))
        if other[1] != str(im.file_name):  # same spelling is reported with the records; this is ./a.jpg, a link...
            out.append(Problem("error", ds.source, item, f"names the same file as image {other[0]} ({other[1]}): "
                               f"{real} (their boxes would mix)"))
        try:
            if decode:
                data = read_file(path)
                h, w = decode_image(data, path).shape[:2]
                if truncated_jpeg(data):
                    out.append(Problem("warning", str(path), item, "JPEG has no end-of-image marker (truncated); "
                                       "it decodes only partly"))
            else:
                w, h = image_size(path)
        except ImageError as exc:  # the message starts with the path, which the problem names already
            msg = str(exc)
            out.append(Problem("error", str(path), item, msg.removeprefix(f"{path}: ")))
            continue
        if (w, h) != (int(im.width), int(im.height)):
            out.append(Problem("error", ds.source, item,
                               f"recorded size {im.width}x{im.height} disagrees with the image file's {w}x{h}"))
    return out
