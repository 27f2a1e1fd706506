"""qualmet's own error types: every message names the file and item and says what is wrong."""
from __future__ import annotations


class QualmetError(Exception):
    """An error the user can act on; the CLI prints it as one line, never a traceback."""


class DatasetError(QualmetError):
    """A data set file could not be loaded (malformed file, or items that cannot be loaded)."""

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class ImageError(QualmetError):
    """An image file is missing, unreadable, undecodable, or outside its image root."""


class PathSafetyError(ImageError):
    """A file name resolves outside the folder it must stay in."""


class PredictionsWarning(UserWarning):
    """Predictions that load but look made for other images (boxes wholly outside their frame)."""


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class Problem:
    """One finding about a data set: which file, which item, what is wrong, and how bad."""

    severity: str  # "error" (cannot be used as is) or "warning" (fixable, or suspicious)
    file: str
    item: str  # e.g. "annotation 12", "image 3 (raccoon-1.jpg)", "line 4"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.item}" if self.item else self.file
        return f"{self.severity}: {where}: {self.message}"

    def to_dict(self) -> dict:
        return {"severity": self.severity, "file": self.file, "item": self.item, "message": self.message}
