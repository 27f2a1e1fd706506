"""The report's output folder: every file goes through ``qualmet.atomic`` and nothing lands outside ``--out``."""
from __future__ import annotations

import os
from pathlib import Path

from .. import atomic
from ..errors import QualmetError
from ..paths import ensure_under

MARKER = ".qualmet-report"  # written into every report folder, so a rebuild may clear its own old assets


def strip_png_text(data: bytes) -> bytes:
    """A PNG without its text chunks (tEXt, zTXt, iTXt), e.g. matplotlib's 'Software' line and its web
    address: the report holds no URL at all. Anything that is not a PNG is returned unchanged."""
    sig = b"\x89PNG\r\n\x1a\n"
    if not data.startswith(sig):
        return data
    parts, i = [sig], len(sig)
    while i + 12 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind, end = data[i + 4:i + 8], i + 12 + n
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            parts.append(data[i:end])
        i = end
        if kind == b"IEND":
            break
    return b"".join(parts)


class Output:
    """A report folder. Paths are relative to it; an absolute path or '..' that leaves it is refused."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise QualmetError(f"{self.root}: --out must be a folder, not a file")
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / MARKER).is_file():
            raise QualmetError(f"{self.root}: folder is not empty and holds no earlier qualmet report; "
                               "choose an empty or new --out folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel`` inside the report folder (refused when it would leave it)."""
        if Path(rel).is_absolute():
            raise QualmetError(f"report output path {rel!r} is absolute; it must be relative to {self.root}")
        try:
            return ensure_under(self.root, rel)
        except Exception as exc:  # PathSafetyError: say it as a report error
            raise QualmetError(f"refusing to write outside the report folder: {exc}") from None

    def write_bytes(self, rel: str, data: bytes) -> str:
        p = self.path(rel)
        atomic.write_bytes(p, data)
        self.written.append(p)
        return rel

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def copy(self, src: str | os.PathLike, rel: str) -> str:
        """Copy an input file (a plot made by another command) into the report; PNG text chunks dropped."""
        data = Path(src).read_bytes()
        return self.write_bytes(rel, strip_png_text(data) if rel.lower().endswith(".png") else data)

    def prune_assets(self) -> None:
        """Remove the files under ``assets/`` this build did not write: an earlier report's pictures.
        Called once the new ``index.html`` is in place, so a rebuild that fails or is interrupted
        leaves the earlier report whole (only when the marker says the folder is ours)."""
        assets = self.root / "assets"
        if not (self.root / MARKER).is_file() or not assets.is_dir():
            return
        keep = set(self.written)
        for f in sorted(assets.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if f.is_dir() and not f.is_symlink():
                if not any(f.iterdir()):
                    f.rmdir()
            elif f not in keep:
                f.unlink()

    def mark(self) -> None:
        self.write_text(MARKER, "written by qualmet report; the folder may be rebuilt by it\n")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
