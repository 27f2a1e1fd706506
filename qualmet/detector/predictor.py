"""Load a saved model folder and predict boxes in original image pixels (COCO xywh).

    from qualmet.detector.predictor import Predictor
    p = Predictor.load("runs/model")
    out = p.predict(["a.jpg", "b.jpg"])        # [{"boxes": (N,4) xywh, "scores": (N,), "labels": (N,) category ids}]
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..dataset import Dataset, empty_annotations
from ..errors import ImageError, QualmetError
from ..imageio import read_image
from .data import FRAMES, letterbox, to_tensor, unletterbox
from .recipe import Recipe, build_model, torch_threads


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QualmetError("--device cuda was asked for but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise QualmetError(f"unknown device {device!r}; use cpu, cuda or auto")
    return torch.device(device)


class Predictor:
    """A trained detector in eval mode plus what is needed to map its outputs back to the data set."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, categories: Sequence[dict[str, Any]],
                 device: str | torch.device = "auto"):
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.model = model.to(self.device).eval()
        self.recipe = recipe
        self.categories = _category_list(categories)
        self.cat_ids = np.array([c["id"] for c in self.categories], dtype=np.int64)
        self.skipped: list[str] = []  # frames predict_dataset could not read, with why

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str = "auto") -> "Predictor":
        """Rebuild the model from ``config.json`` and load ``model.pt`` (weights only), after checking
        ``model.pt`` against the SHA-256 that ``config.json`` records."""
        d = Path(model_dir)
        for f in ("config.json", "model.pt"):
            if not (d / f).is_file():
                raise QualmetError(f"{d}: not a model folder (no {f}); train one with `qualmet train`")
        cfg_path, weights = d / "config.json", d / "model.pt"
        redo = "rerun the `qualmet train` command that made this folder"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            recipe = Recipe.from_dict(cfg["recipe"])
            categories = _category_list(cfg["categories"])
            if (d / "categories.json").is_file():  # written with the weights: the labels they were trained for
                written = _category_list(json.loads((d / "categories.json").read_text(encoding="utf-8")))
                if written != categories:
                    raise ValueError(f"its categories differ from categories.json's ({written[:3]}...), which "
                                     "the weights were trained for")
            outputs = cfg.get("outputs", {})  # absent in folders from before checksums
            if not isinstance(outputs, dict):
                raise TypeError(f"'outputs' must be a table of checksums, not {type(outputs).__name__}")
            want = outputs["model.pt"]["sha256"] if "model.pt" in outputs else None
            model = build_model(recipe, len(categories))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError,
                QualmetError) as exc:
            raise QualmetError(f"{cfg_path}: not a readable model config ({type(exc).__name__}: {exc}); {redo}") from None
        if want is not None:
            from ..atomic import sha256_file

            if sha256_file(weights) != want:
                raise QualmetError(f"{weights}: SHA-256 differs from the one in config.json (damaged or "
                                   "replaced after training); rerun the same `qualmet train` command to rewrite it")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, pickle and zip errors for a damaged file
            raise QualmetError(f"{weights}: cannot be read as model weights ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); {redo}") from None
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip() and "Error(s)" not in ln), str(exc))
            raise QualmetError(f"{weights}: does not fit the model config.json describes ({first}); "
                               f"are both from the same training? {redo}") from None
        return cls(model, recipe, categories, device)

    def predict(self, images: Iterable[str | os.PathLike | np.ndarray], score_threshold: float = 0.001,
                batch_size: int = 16) -> list[dict[str, Any]]:
        """Detections per image, in input order: ``boxes`` (N, 4) xywh in original pixels, ``scores``,
        ``labels`` (category ids). ``images`` are paths or uint8 RGB arrays, (H, W, 3), (H, W, 4) (alpha
        ignored) or (H, W) grey. A file that cannot be read gets no detections and an ``error`` entry
        naming it (also in ``self.skipped``, with a warning): one bad file never loses the others. An
        array of another shape or type is a QualmetError (scale floats to 0-255 uint8 first)."""
        with torch_threads(self.recipe.threads):
            out = self._predict(images, score_threshold, batch_size, cached=False)
        self.skipped = [d["error"] for d in out if "error" in d]
        _warn_skipped(self.skipped, "image(s) could not be read and have no detections")
        return out

    @torch.no_grad()
    def _predict(self, images: Iterable[str | os.PathLike | np.ndarray], score_threshold: float,
                 batch_size: int, cached: bool) -> list[dict[str, Any]]:
        """``cached``: frames from paths go through the process-wide frame cache (a data set's frames,
        predicted again after every arm of an experiment), not for arbitrary lists of files."""
        out: list[dict[str, Any]] = []
        batch: list[tuple[int, np.ndarray, tuple[float, float], tuple[int, int]]] = []

        def flush() -> None:
            if not batch:
                return
            x = [to_tensor(b[1]).to(self.device) for b in batch]
            use_amp = self.device.type == "cuda" and self.recipe.amp
            with torch.autocast("cuda", enabled=use_amp):
                dets = self.model(x)
            for (k, _, scale, (h, w)), det in zip(batch, dets):
                xywh, keep = unletterbox(det["boxes"], scale, w, h)
                keep &= (det["scores"] >= score_threshold).cpu().numpy()
                labels = det["labels"].cpu().numpy()[keep]
                out[k] = {"boxes": xywh[keep], "scores": det["scores"].float().cpu().numpy().astype(np.float64)[keep],
                          "labels": self.cat_ids[np.clip(labels - 1, 0, len(self.cat_ids) - 1)]}
            batch.clear()

        for k, im in enumerate(images):
            out.append({"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)})
            try:
                if isinstance(im, np.ndarray):
                    boxed, scale, hw = self._boxed(_rgb_array(im, k))
                elif cached:
                    boxed, scale, hw = FRAMES.get(im, self.recipe.input_size)
                else:
                    boxed, scale, hw = self._boxed(read_image(im))
            except ImageError as exc:
                out[k]["error"] = str(exc)
                continue
            batch.append((k, boxed, scale, hw))
            if len(batch) >= batch_size:
                flush()
        flush()
        return out

    def _boxed(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        boxed, scale = letterbox(arr, self.recipe.input_size)
        return boxed, scale, (int(arr.shape[0]), int(arr.shape[1]))

    def predict_dataset(self, ds: Dataset, score_threshold: float = 0.001, batch_size: int = 16,
                        progress: bool = False) -> pd.DataFrame:
        """Predictions for every frame of ``ds`` as an annotations-shaped DataFrame with ``score``.
        Frames that cannot be read are left out, listed in ``self.skipped`` and named in a warning."""
        from ..log import bar

        ids, paths, unsafe = [], [], []
        for img_id, fn in zip(ds.images["id"], ds.images["file_name"]):
            try:
                paths.append(ds.image_path(fn))
                ids.append(int(img_id))
            except (ImageError, ValueError) as exc:  # a file name that leaves the image root (PathSafetyError)
                unsafe.append(str(exc))
        with torch_threads(self.recipe.threads):
            dets = self._predict(bar(paths, desc="predict", unit="img", enabled=progress), score_threshold,
                                 batch_size, cached=True)
        self.skipped = unsafe + [d["error"] for d in dets if "error" in d]
        _warn_skipped(self.skipped, "frame(s) could not be read and have no predictions")
        rows = []
        for img_id, det in zip(ids, dets):
            for (x, y, w, h), s, c in zip(det["boxes"], det["scores"], det["labels"]):
                rows.append((img_id, int(c), float(x), float(y), float(w), float(h), float(s)))
        if not rows:
            return empty_annotations(with_score=True)
        df = pd.DataFrame(rows, columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
        df.insert(0, "id", np.arange(1, len(df) + 1))
        df["area"] = df["w"] * df["h"]
        df["iscrowd"] = 0
        return df


def _category_list(categories: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Categories as ``[{"id": int, "name": str}, ...]``, the form config.json and categories.json hold."""
    return [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]


class SkippedFramesWarning(UserWarning):
    """Some images could not be read and have no detections (``Predictor.skipped`` lists them)."""


def _warn_skipped(skipped: list[str], what: str) -> None:
    if skipped:
        warnings.warn(f"{len(skipped)} {what}: {'; '.join(skipped[:3])}", SkippedFramesWarning, stacklevel=3)


def _rgb_array(a: np.ndarray, k: int) -> np.ndarray:
    """An image array as (H, W, 3) uint8 RGB: grey is repeated, an alpha channel dropped; anything else
    (floats, 16 bits, other shapes) is refused rather than cast into wrong pixels."""
    if a.dtype != np.uint8:
        how = ("(a * 255).round().astype(np.uint8) for floats in [0, 1]" if a.dtype.kind == "f" else
               "(a >> 8).astype(np.uint8) for 16-bit values" if a.dtype == np.uint16 else "scale it to 0-255 first")
        raise QualmetError(f"image {k}: expected a uint8 RGB array, got dtype {a.dtype}; convert it, e.g. {how}")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        return np.repeat(a.reshape(a.shape[0], a.shape[1], 1), 3, axis=2)
    if a.ndim == 3 and a.shape[2] in (3, 4) and a.shape[0] > 0 and a.shape[1] > 0:
        return a[:, :, :3]
    raise QualmetError(f"image {k}: expected an (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey array, got shape {a.shape}")


def to_results(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """An annotations-shaped prediction frame as a COCO results list."""
    return [{"image_id": int(i), "category_id": int(c), "bbox": [round(float(x), 3), round(float(y), 3),
                                                                  round(float(w), 3), round(float(h), 3)],
             "score": round(float(s), 5)}
            for i, c, x, y, w, h, s in zip(preds["image_id"], preds["category_id"], preds["x"], preds["y"],
                                           preds["w"], preds["h"], preds["score"])]
