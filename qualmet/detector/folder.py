"""What a model folder holds while and after training: the resumable checkpoint, the final outputs
with their checksums in config.json, and whether an earlier run there was the same training."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path, sha256_file
from ..errors import QualmetError

# Final outputs whose checksums config.json records (config.json itself is written after them).
OUTPUT_FILES = ("model.pt", "categories.json", "train_log.csv", "loss_curves.png")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict; a damaged file is a one-line error, never a traceback."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/UnpicklingError
        raise QualmetError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc}); "
                           "delete it to train from scratch") from None


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete temp files that a killed run left beside its outputs (``.model.pt.XXXX.tmp.pt`` ...).

    They are never read (a temp file only becomes an output by an atomic rename); removing them
    keeps the folder clean. Returns what was removed.
    """
    removed = []
    for name in (*OUTPUT_FILES, "checkpoint.pt", "config.json"):
        for f in out.glob(f".{name}.*.tmp{Path(name).suffix}"):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


_SAME_TRAINING = ("recipe", "seed", "val_fraction", "categories", "val_image_ids", "n_train_images", "train_data")


def differences_from(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings and training data in which an earlier training (a checkpoint's or a finished folder's
    config) differs from this one."""
    return [k for k in _SAME_TRAINING if old.get(k) != new[k]]


def finished_config(out: Path) -> dict[str, Any] | None:
    """A model folder's config.json as a dict, or None when it cannot be read as one."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def outputs_intact(out: Path) -> bool:
    """True when ``config.json`` exists and every output it lists has the recorded SHA-256."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
        listed = cfg["outputs"]
        return set(listed) == set(OUTPUT_FILES) and all(
            (out / n).is_file() and sha256_file(out / n) == listed[n]["sha256"] for n in OUTPUT_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False
