"""Path safety: image file names from a data set never resolve outside their image root."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import PathSafetyError


def safe_join(root: str | os.PathLike, file_name: str, what: str = "image", cache: dict | None = None) -> Path:
    """Join `file_name` under `root`, refusing absolute paths, '..' escapes and symlinks leading out.

    Raises PathSafetyError naming the file name; the file itself is never opened. ``cache`` (a dict
    the caller keeps for one pass over many files) remembers the resolved root and folders, so a
    plain name like ``a/b.jpg`` costs one ``lstat`` instead of one per path component.
    """
    if not isinstance(file_name, str) or not file_name:
        raise PathSafetyError(f"{what} file_name {file_name!r} is empty or not a string")
    if "\x00" in file_name:
        raise PathSafetyError(f"{what} file_name {file_name!r} contains a NUL byte")
    # a name that starts with neither slash and has no colon can be neither absolute nor carry a
    # drive in either flavour; anything else gets the full pathlib checks
    if (file_name[0] in "/\\" or ":" in file_name) and (
            PurePosixPath(file_name).is_absolute() or PureWindowsPath(file_name).is_absolute() or PureWindowsPath(file_name).drive):
        raise PathSafetyError(f"{what} file_name {file_name!r} is an absolute path; it must be relative to the image root")
    if cache is not None:
        fast = _cached_join(root, file_name, cache)
        if fast is not None:
            return fast
    root_real = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(root_real / file_name))
    if not _within(candidate, root_real):
        raise PathSafetyError(f"{what} file_name {file_name!r} resolves outside the image root {root_real}")
    return candidate


def _within(path: Path, root: Path) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies below it."""
    return path == root or root in path.parents


def _cached_join(root: str | os.PathLike, file_name: str, cache: dict) -> Path | None:
    """The resolved path through cached folders, or None where only the full check can tell
    (dots, empty parts, backslashes, a symlinked file, a folder outside the root)."""
    if "\\" in file_name or any(p in ("", ".", "..") for p in file_name.split("/")):
        return None
    head, _, base = file_name.rpartition("/")
    key = (os.fspath(root), head)
    folder = cache.get(key)
    if folder is None:
        rkey = (os.fspath(root), None)
        root_real = cache.get(rkey)
        if root_real is None:
            root_real = cache[rkey] = Path(os.path.realpath(root))
        folder = Path(os.path.realpath(root_real / head)) if head else root_real
        if not _within(folder, root_real):
            return None  # the full check raises with its message
        cache[key] = folder
    candidate = folder / base
    if os.path.islink(candidate):
        return None
    return candidate


def ensure_under(out_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Return `path` resolved under `out_dir`, or raise if it would land outside it."""
    out_real = Path(os.path.realpath(out_dir))
    p = Path(os.path.realpath(Path(out_real, path)))
    if not _within(p, out_real):
        raise PathSafetyError(f"output path {os.fspath(path)!r} would be written outside {out_real}")
    return p
