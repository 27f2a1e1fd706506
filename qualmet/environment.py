"""The library versions a result was computed with, recorded beside it.

Metric values and trained models can change with the installed OpenCV, numpy or torch (an OpenCV
release once moved box_tightness_iou's values), so every run.json, experiment config and model config
names them. Versions come from package metadata: nothing heavy (torch) is imported to learn them.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata

# distributions whose behaviour reaches qualmet's numbers; the first installed name of each group is used
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow",),
    "pycocotools": ("pycocotools",),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
}


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Python, the platform and each package in :data:`PACKAGES` (None when not installed)."""
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            **{key: _version(names) for key, names in PACKAGES.items()}}


# what metric values can depend on; cached metric results are keyed by these versions
METRIC_LIBRARIES = ("python", "numpy", "opencv", "pandas")


def digest(keys: tuple[str, ...] | None = None, current: dict | None = None) -> str:
    """A short hash of the versions of ``keys`` (default: all but the platform), for cache keys;
    ``current`` is a :func:`versions` result the caller already has."""
    v = versions() if current is None else current
    picked = {k: v[k] for k in (keys or [k for k in v if k != "platform"])}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def differences(recorded: dict | None, current: dict | None = None) -> dict[str, tuple]:
    """``{package: (recorded, current)}`` for the packages whose versions differ (platform ignored)."""
    if not recorded:
        return {}
    current = versions() if current is None else current
    return {k: (recorded.get(k), current.get(k)) for k in current
            if k != "platform" and k in recorded and recorded.get(k) != current.get(k)}


def describe(changed: dict[str, tuple]) -> str:
    """``differences`` as one line: "opencv 5.0.0.93 -> 5.1.0.95, numpy ..."."""
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
