"""Label-noise injection that records every mistake, so noisy labels can be rebuilt or undone exactly.

``corrupt`` draws errors (loose, shift, squash, spurious, missing, duplicate, wrong_class) into a
copy of a data set and returns a manifest with one row per error; ``apply`` replays a manifest on the
clean labels, ``restore`` undoes it, ``restore_images`` undoes it for chosen frames only (the
"oracle relabel" arm). Annotations of every data set returned here are sorted by id.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .boxes import iou_matrix
from .dataset import ANNOTATION_COLUMNS, BOX_COLUMNS, Dataset, clean_record
from .errors import QualmetError
from .manifest import ERROR_TYPES, NEW, ORIG, _manifest_frame, count_by_type, default_manifest_path, save_manifest

BOX_TYPES = ("loose", "shift", "squash")  # change an existing box in place
ADDED_TYPES = ("spurious", "duplicate")  # add a new annotation
PER_ANNOTATION = ("loose", "shift", "squash", "missing", "duplicate", "wrong_class")  # consume a true box


# -- public API -------------------------------------------------------------------------------

def canonical(ds: Dataset) -> Dataset:
    """The data set with annotations sorted by id (the order every function here returns)."""
    anns = ds.annotations.sort_values("id", kind="stable").reset_index(drop=True)
    return replace(ds, annotations=anns)


def applicable_types(ds: Dataset) -> list[str]:
    """Error types that make sense for this data set (``wrong_class`` needs two categories)."""
    return [t for t in ERROR_TYPES if t != "wrong_class" or len(ds.categories) >= 2]


def corrupt(ds: Dataset, rate: float = 0.3, seed: int = 0, types: Sequence[str] | None = None,
            shares: dict[str, float] | Sequence[float] | None = None) -> tuple[Dataset, pd.DataFrame]:
    """Inject ``round(rate * #annotations)`` label errors; return (noisy copy, manifest of every error).

    Each true box receives at most one error; error types are drawn by ``shares`` (default equal).
    Deterministic for a seed. Spurious boxes that cannot be placed (crowded frames) are skipped.
    """
    clean = canonical(ds)
    types = _check_types(clean, types)
    p = _shares(types, shares)
    order = sorted(range(len(types)), key=lambda i: ERROR_TYPES.index(types[i]))  # the order given does not matter
    types, p = [types[i] for i in order], p[order]
    if not (0.0 <= float(rate) <= 1.0) or not math.isfinite(float(rate)):
        raise QualmetError(f"noise rate must be between 0 and 1, got {rate!r}")
    anns = clean.annotations
    n_err = int(round(float(rate) * len(anns)))
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(types), size=n_err, p=p) if n_err else np.zeros(0, dtype=int)
    counts = {t: int((drawn == i).sum()) for i, t in enumerate(types)}

    sizes = _relative_sizes(clean)
    dims = clean.images.set_index("id")[["width", "height"]].astype(float)
    cat_ids = clean.categories["id"].astype(int).to_numpy()
    by_image = {int(k): g[BOX_COLUMNS].to_numpy(dtype=np.float64) for k, g in anns.groupby("image_id")}
    next_id = (int(anns["id"].max()) if len(anns) else 0) + 1
    rows: list[dict[str, Any]] = []

    # per-annotation errors: a random order of the true boxes, each used once
    order = rng.permutation(len(anns))
    jobs = [t for t in types if t in PER_ANNOTATION for _ in range(counts[t])]
    rng.shuffle(jobs)
    if len(jobs) > len(anns):  # cannot happen with rate <= 1, kept as a guard
        raise QualmetError(f"{len(jobs)} errors asked for but only {len(anns)} annotations")
    for t, pos in zip(jobs, order[: len(jobs)]):
        a = anns.iloc[int(pos)]
        W, H = dims.loc[int(a["image_id"])]
        box = a[BOX_COLUMNS].to_numpy(dtype=np.float64)
        row = _row(a, t)
        if t == "missing":
            row.update(dict(zip(NEW, [math.nan] * 4)), new_category_id=math.nan,
                       orig_extra=_extras(a) or None)
        elif t == "wrong_class":
            others = cat_ids[cat_ids != int(a["category_id"])]
            row.update(dict(zip(NEW, box)), new_category_id=float(rng.choice(others)))
        elif t == "duplicate":
            row.update(dict(zip(NEW, _duplicate(box, W, H, rng))), annotation_id=next_id, source_id=float(a["id"]),
                       **{k: math.nan for k in ORIG + ["orig_category_id", "orig_area", "orig_iscrowd"]})
            next_id += 1
        else:
            new = {"loose": _loose, "shift": _shift, "squash": _squash}[t](box, W, H, rng)
            row.update(dict(zip(NEW, new)))
        rows.append(row)

    # spurious boxes: random frames, placed away from every true box
    img_ids = np.sort(clean.images["id"].astype(int).to_numpy())  # not the file's order of images
    for _ in range(counts.get("spurious", 0)):
        if not len(img_ids) or not len(sizes):
            break
        for _attempt in range(10):  # a crowded frame is skipped for another one
            iid = int(rng.choice(img_ids))
            W, H = dims.loc[iid]
            placed = _spurious(by_image.get(iid, np.zeros((0, 4))), W, H, sizes, rng)
            if placed is not None:
                box, cat = placed
                rows.append({"annotation_id": next_id, "image_id": iid, "type": "spurious",
                             **dict(zip(ORIG, [math.nan] * 4)), **dict(zip(NEW, box)),
                             "orig_category_id": math.nan, "new_category_id": float(cat), "source_id": math.nan,
                             "orig_area": math.nan, "orig_iscrowd": math.nan, "orig_extra": None})
                next_id += 1
                break

    manifest = _manifest_frame(rows)
    return apply(clean, manifest), manifest


def apply(clean: Dataset, manifest: pd.DataFrame) -> Dataset:
    """Replay a manifest on the clean labels, giving exactly the noisy data set ``corrupt`` returned."""
    ds = canonical(clean)
    anns = ds.annotations.set_index("id", drop=False)
    m = _manifest_frame(manifest)
    known = set(anns.index)
    for r in m.itertuples(index=False):
        aid = int(r.annotation_id)
        if r.type in ADDED_TYPES:
            if aid in known:
                raise QualmetError(f"manifest: {r.type} annotation {aid} already exists in {ds.source}")
            continue
        if aid not in known:
            raise QualmetError(f"manifest: annotation {aid} ({r.type}) is not in {ds.source}")
        if not np.allclose(anns.loc[aid, BOX_COLUMNS].to_numpy(dtype=float), [r.orig_x, r.orig_y, r.orig_w, r.orig_h]):
            raise QualmetError(f"manifest: annotation {aid} box differs from the manifest's original; "
                               f"is this the data set the manifest was made from?")
    for t in BOX_TYPES:
        sel = m[m["type"] == t]
        if len(sel):
            ids = sel["annotation_id"].astype(int).to_numpy()
            anns.loc[ids, BOX_COLUMNS] = sel[NEW].to_numpy(dtype=np.float64)
            anns.loc[ids, "area"] = sel["new_w"].to_numpy(dtype=np.float64) * sel["new_h"].to_numpy(dtype=np.float64)
    sel = m[m["type"] == "wrong_class"]
    if len(sel):
        anns.loc[sel["annotation_id"].astype(int).to_numpy(), "category_id"] = sel["new_category_id"].astype(int).to_numpy()
    sel = m[m["type"] == "missing"]
    anns = anns.drop(index=sel["annotation_id"].astype(int).to_numpy())
    added = m[m["type"].isin(ADDED_TYPES)]
    if len(added):
        new = pd.DataFrame({"id": added["annotation_id"].astype("int64").to_numpy(),
                            "image_id": added["image_id"].astype("int64").to_numpy(),
                            "category_id": added["new_category_id"].astype("int64").to_numpy(),
                            **{c: added[n].to_numpy(dtype=np.float64) for c, n in zip(BOX_COLUMNS, NEW)},
                            "area": (added["new_w"] * added["new_h"]).to_numpy(dtype=np.float64),
                            "iscrowd": np.zeros(len(added), dtype=np.int64)})
        anns = pd.concat([anns.reset_index(drop=True), new], ignore_index=True)
    return _finish(ds, anns)


def restore(noisy: Dataset, manifest: pd.DataFrame) -> Dataset:
    """Undo every error in the manifest, giving back the clean data set (annotations sorted by id)."""
    ds = canonical(noisy)
    m = _manifest_frame(manifest)
    anns = ds.annotations.set_index("id", drop=False)
    _check_fits_noisy(anns, m, ds.source)
    present = set(anns.index)
    gone = m[m["type"].isin(ADDED_TYPES)]["annotation_id"].astype(int)
    anns = anns.drop(index=[i for i in gone if i in present])
    changed = m[m["type"].isin(BOX_TYPES + ("wrong_class",))]
    if len(changed):
        ids = changed["annotation_id"].astype(int).to_numpy()
        anns.loc[ids, BOX_COLUMNS] = changed[ORIG].to_numpy(dtype=np.float64)
        anns.loc[ids, "area"] = changed["orig_area"].to_numpy(dtype=np.float64)
        anns.loc[ids, "category_id"] = changed["orig_category_id"].astype(int).to_numpy()
    miss = m[m["type"] == "missing"]
    if len(miss):
        recs = []
        for r in miss.itertuples(index=False):
            rec = {"id": int(r.annotation_id), "image_id": int(r.image_id), "category_id": int(r.orig_category_id),
                   "x": float(r.orig_x), "y": float(r.orig_y), "w": float(r.orig_w), "h": float(r.orig_h),
                   "area": float(r.orig_area), "iscrowd": int(r.orig_iscrowd)}
            if isinstance(r.orig_extra, dict):
                rec.update(r.orig_extra)
            recs.append(rec)
        anns = pd.concat([anns.reset_index(drop=True), pd.DataFrame(recs)], ignore_index=True)
    return _finish(ds, anns)


def _check_fits_noisy(anns: pd.DataFrame, m: pd.DataFrame, source: str) -> None:
    """Refuse a manifest that does not describe this noisy set (restoring it would duplicate ids or
    move boxes that are not the noisy ones): a deleted box must be absent, every other error's box
    present with the manifest's new coordinates."""
    present = set(anns.index)
    for r in m.itertuples(index=False):
        aid = int(r.annotation_id)
        if r.type == "missing":
            if aid in present:
                raise QualmetError(f"manifest: annotation {aid} is recorded as deleted (missing) but {source} has it; "
                                   "is this the clean set, or another noisy set?")
            continue
        if aid not in present:
            raise QualmetError(f"manifest: annotation {aid} ({r.type}) is not in {source}")
        new = np.array([r.new_x, r.new_y, r.new_w, r.new_h], dtype=np.float64)
        got = anns.loc[aid, BOX_COLUMNS].to_numpy(dtype=np.float64)
        if not np.allclose(got, new, rtol=0, atol=1e-6):
            raise QualmetError(f"manifest: annotation {aid} ({r.type}) is {got.tolist()} in {source}, the manifest "
                               f"says the noisy box is {new.tolist()}; the manifest belongs to another noisy set")


def restore_images(noisy: Dataset, manifest: pd.DataFrame, image_ids: Iterable[int]) -> Dataset:
    """Restore the clean labels of these frames only, leaving the noise elsewhere (oracle relabel)."""
    m = _manifest_frame(manifest)
    ids = {int(i) for i in image_ids}
    return restore(noisy, m[m["image_id"].astype(int).isin(ids)])


# -- box perturbations (xywh numpy arrays; W, H = image size) ---------------------------------

def _loose(b: np.ndarray, W: float, H: float, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = b
    sx, sy = rng.uniform(1.3, 2.0, size=2)
    ex, ey = (sx - 1) * w, (sy - 1) * h
    fx, fy = rng.uniform(0, 1, size=2)  # asymmetric padding: share of the growth on the left/top
    x0, y0, x1, y1 = x - fx * ex, y - fy * ey, x + w + (1 - fx) * ex, y + h + (1 - fy) * ey
    # clip to the image, but never inside the original box
    x0, y0 = min(max(x0, 0.0), x), min(max(y0, 0.0), y)
    x1, y1 = max(min(x1, W), x + w), max(min(y1, H), y + h)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _shift(b: np.ndarray, W: float, H: float, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = b
    f = rng.uniform(0.3, 0.7)
    best, best_d, first = None, -1.0, None
    for _ in range(12):  # prefer a direction that keeps the box inside the image
        th = rng.uniform(0, 2 * np.pi)
        nx, ny = x + f * w * np.cos(th), y + f * h * np.sin(th)
        if first is None:
            first = np.array([nx, ny, w, h])
        if nx >= 0 and ny >= 0 and nx + w <= W and ny + h <= H:
            return np.array([nx, ny, w, h])
        # slide back inside (the shift gets smaller); keep the direction that keeps most of it
        cx = min(max(nx, 0.0), max(W - w, 0.0))
        cy = min(max(ny, 0.0), max(H - h, 0.0))
        d = math.hypot((cx - x) / max(w, 1e-9), (cy - y) / max(h, 1e-9))
        if d > best_d:
            best, best_d = np.array([cx, cy, w, h]), d
    if best_d >= 0.3:
        return best
    # the box nearly fills the frame: move it anyway and cut what leaves the image
    return _clip(first, W, H)


def _squash(b: np.ndarray, W: float, H: float, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = b
    s = rng.uniform(0.4, 0.7) if rng.uniform() < 0.5 else rng.uniform(1.5, 2.5)
    if rng.uniform() < 0.5:
        cx = x + w / 2
        out = np.array([cx - s * w / 2, y, s * w, h])
    else:
        cy = y + h / 2
        out = np.array([x, cy - s * h / 2, w, s * h])
    return _clip(out, W, H)


def _duplicate(b: np.ndarray, W: float, H: float, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = b
    for _ in range(50):
        j = rng.uniform(-0.08, 0.08, size=4)
        cand = _clip(np.array([x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3])]), W, H)
        iou = iou_matrix(cand, b)[0, 0]
        if 0.7 < iou < 0.999:
            return cand
    return np.array(b, dtype=float)  # degenerate box: an exact copy is still a duplicate


def _spurious(true_boxes: np.ndarray, W: float, H: float, sizes: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    for _ in range(20):
        rw, rh, cat = sizes[rng.integers(len(sizes))]
        w, h = min(rw * W, W), min(rh * H, H)
        if w < 1 or h < 1:
            continue
        cand = np.array([rng.uniform(0, W - w), rng.uniform(0, H - h), w, h])
        if not len(true_boxes) or iou_matrix(cand, true_boxes).max() < 0.1:
            return cand, int(cat)
    return None


def _clip(b: np.ndarray, W: float, H: float) -> np.ndarray:
    x0, y0 = min(max(b[0], 0.0), W), min(max(b[1], 0.0), H)
    x1, y1 = min(max(b[0] + b[2], 0.0), W), min(max(b[1] + b[3], 0.0), H)
    return np.array([x0, y0, x1 - x0, y1 - y0])


# -- helpers ----------------------------------------------------------------------------------

def _check_types(ds: Dataset, types: Sequence[str] | str | None) -> list[str]:
    ok = applicable_types(ds)
    if types is None:
        return ok
    if isinstance(types, str):
        types = [t.strip() for t in types.split(",") if t.strip()]
    bad = [t for t in types if t not in ERROR_TYPES]
    if bad:
        raise QualmetError(f"unknown noise type(s) {', '.join(bad)}; choose from {', '.join(ERROR_TYPES)}")
    if "wrong_class" in types and "wrong_class" not in ok:
        raise QualmetError(f"{ds.source}: wrong_class needs at least 2 categories, the data set has {len(ds.categories)}")
    if not types:
        raise QualmetError("no noise types given")
    return list(dict.fromkeys(types))


def _shares(types: list[str], shares: dict[str, float] | Sequence[float] | None) -> np.ndarray:
    if shares is None:
        p = np.ones(len(types))
    elif isinstance(shares, dict):
        unknown = [k for k in shares if k not in types]
        if unknown:
            raise QualmetError(f"shares given for type(s) not in use: {', '.join(unknown)}")
        p = np.array([float(shares.get(t, 0.0)) for t in types])
    else:
        p = np.asarray(list(shares), dtype=float)
        if len(p) != len(types):
            raise QualmetError(f"{len(p)} shares given for {len(types)} types")
    if (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise QualmetError(f"shares must be non-negative with a positive sum, got {p.tolist()}")
    return p / p.sum()


def _relative_sizes(ds: Dataset) -> np.ndarray:
    """(w/W, h/H, category) of every true box: spurious boxes borrow a real box's relative size."""
    a = ds.annotations.merge(ds.images[["id", "width", "height"]].rename(columns={"id": "image_id"}), on="image_id")
    a = a[(a["w"] > 0) & (a["h"] > 0)]
    return np.stack([a["w"] / a["width"], a["h"] / a["height"], a["category_id"]], axis=1).astype(float) \
        if len(a) else np.zeros((0, 3))


def _row(a: pd.Series, t: str) -> dict[str, Any]:
    return {"annotation_id": int(a["id"]), "image_id": int(a["image_id"]), "type": t,
            **{o: float(a[c]) for o, c in zip(ORIG, BOX_COLUMNS)},
            "orig_category_id": float(a["category_id"]), "new_category_id": float(a["category_id"]),
            "source_id": math.nan, "orig_area": float(a["area"]), "orig_iscrowd": float(a["iscrowd"]),
            "orig_extra": None}


def _extras(a: pd.Series) -> dict[str, Any]:
    """Extra COCO keys of an annotation (segmentation, ...), JSON-ready, missing ones dropped."""
    out = clean_record({k: v for k, v in a.items() if k not in ANNOTATION_COLUMNS and k != "score"})
    if "score" in a.index and not pd.isna(a["score"]):
        out["score"] = float(a["score"])
    return out


def _finish(ds: Dataset, anns: pd.DataFrame) -> Dataset:
    anns = anns.reset_index(drop=True).sort_values("id", kind="stable").reset_index(drop=True)
    return replace(ds, annotations=anns).normalised()


def corrupt_file(dataset: str | os.PathLike, out: str | os.PathLike, rate: float = 0.3, seed: int = 0,
                 types: Sequence[str] | None = None, shares: dict[str, float] | Sequence[float] | None = None,
                 manifest: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None) -> tuple[Path, Path, dict[str, int]]:
    """File-level ``corrupt`` (the ``qualmet corrupt`` command): load COCO, write noisy COCO and manifest.

    The noisy file finds the clean set's images wherever it is written (``save_coco``'s ``.images``
    sidecar). Returns (noisy path, manifest path, errors per type).
    """
    from .formats import load_coco, save_coco
    from .formats.coco import check_coco_target

    src, dst = Path(dataset), Path(out)
    mpath = Path(manifest) if manifest is not None else default_manifest_path(dst)
    if src.resolve() == dst.resolve():
        raise QualmetError(f"{dst}: refusing to overwrite the clean data set; choose another --out")
    if mpath.resolve() in (src.resolve(), dst.resolve()):
        raise QualmetError(f"{mpath}: the manifest would overwrite the {'clean' if mpath.resolve() == src.resolve() else 'noisy'} "
                           "data set; choose another --manifest")
    ds = load_coco(src, images=images)
    noisy, m = corrupt(ds, rate=rate, seed=seed, types=types, shares=shares)
    check_coco_target(dst)  # before the manifest replaces an earlier one
    save_manifest(m, mpath)
    try:
        save_coco(noisy, dst)
    except BaseException:  # a noisy set is only ever left with its manifest, and a manifest with its set
        mpath.unlink(missing_ok=True)
        raise
    return dst, mpath, count_by_type(m)
