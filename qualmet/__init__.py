"""qualmet: data-centric quality metrics for object detection.

Load a labeled data set, compute quality metrics (plugins), select training subsets, train and
evaluate a fixed detector, and report every strategy against a random baseline.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .dataset import Dataset  # noqa: E402
from .errors import DatasetError, ImageError, PathSafetyError, PredictionsWarning, Problem, QualmetError  # noqa: E402
from .formats import (load_coco, load_csv, load_dataset, load_predictions, load_voc, load_yolo,  # noqa: E402
                      save_coco, save_yolo)

__all__ = ["__version__", "Dataset", "DatasetError", "ImageError", "PathSafetyError", "PredictionsWarning", "Problem", "QualmetError",
           "load_coco", "load_csv", "load_dataset", "load_predictions", "load_voc", "load_yolo", "save_coco",
           "save_yolo"]

# Heavier parts load on first use, so ``import qualmet`` (and the CLI) stays fast and torch-free.
_LAZY = {
    "metric": "qualmet.plugin",
    "MetricContext": "qualmet.context",
    "run_metrics": "qualmet.runner",
    "Predictor": "qualmet.detector.predictor",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qualmet' has no attribute {name!r}")
