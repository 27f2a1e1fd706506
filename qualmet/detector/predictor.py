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
from .data import letterbox, to_tensor, unletterbox
from .recipe import Recipe, build_model


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
        self.categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]
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
        try:
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
            recipe = Recipe.from_dict(cfg["recipe"])
            n_classes = len(cfg["categories"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise QualmetError(f"{d / 'config.json'}: not a readable model config ({type(exc).__name__}: {exc}); "
                               "rerun the `qualmet train` command that made this folder") from None
        want = (cfg.get("outputs") or {}).get("model.pt", {}).get("sha256")  # absent in folders from before checksums
        if want is not None:
            from ..atomic import sha256_file

            if sha256_file(d / "model.pt") != want:
                raise QualmetError(f"{d / 'model.pt'}: SHA-256 differs from the one in config.json (damaged or "
                                   "replaced after training); rerun the same `qualmet train` command to rewrite it")
        model = build_model(recipe, n_classes)
        state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return cls(model, recipe, cfg["categories"], device)

    @torch.no_grad()
    def predict(self, images: Iterable[str | os.PathLike | np.ndarray], score_threshold: float = 0.001,
                batch_size: int = 16) -> list[dict[str, np.ndarray]]:
        """Detections per image: ``boxes`` (N, 4) xywh in original pixels, ``scores``, ``labels``
        (category ids). ``images`` are paths or (H, W, 3) RGB uint8 arrays."""
        out: list[dict[str, np.ndarray]] = []
        batch: list[tuple[np.ndarray, float, tuple[int, int]]] = []

        def flush() -> None:
            if not batch:
                return
            x = [to_tensor(b[0]).to(self.device) for b in batch]
            use_amp = self.device.type == "cuda" and self.recipe.amp
            with torch.autocast("cuda", enabled=use_amp):
                dets = self.model(x)
            for (_, scale, (h, w)), det in zip(batch, dets):
                keep = det["scores"] >= score_threshold
                b = unletterbox(det["boxes"][keep], scale, w, h)
                xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
                labels = det["labels"][keep].cpu().numpy()
                out.append({"boxes": xywh, "scores": det["scores"][keep].float().cpu().numpy().astype(np.float64),
                            "labels": self.cat_ids[np.clip(labels - 1, 0, len(self.cat_ids) - 1)]})
            batch.clear()

        for im in images:
            arr = im if isinstance(im, np.ndarray) else read_image(im)
            boxed, scale = letterbox(arr, self.recipe.input_size)
            batch.append((boxed, scale, arr.shape[:2]))
            if len(batch) >= batch_size:
                flush()
        flush()
        return out

    def predict_dataset(self, ds: Dataset, score_threshold: float = 0.001, batch_size: int = 16,
                        progress: bool = False) -> pd.DataFrame:
        """Predictions for every frame of ``ds`` as an annotations-shaped DataFrame with ``score``."""
        from tqdm.auto import tqdm

        ok_ids: list[int] = []
        self.skipped = []

        def frames():
            it = zip(ds.images["id"], ds.images["file_name"])
            for img_id, fn in tqdm(it, total=len(ds.images), desc="predict", unit="img", disable=not progress):
                try:
                    arr = read_image(ds.image_path(fn))
                except (ImageError, ValueError) as exc:  # one bad frame never loses the others
                    self.skipped.append(str(exc))
                    continue
                ok_ids.append(int(img_id))
                yield arr

        dets = self.predict(frames(), score_threshold, batch_size)
        if self.skipped:
            warnings.warn(f"{len(self.skipped)} frame(s) could not be read and have no predictions: "
                          f"{'; '.join(self.skipped[:3])}", stacklevel=2)
        rows = []
        for img_id, det in zip(ok_ids, dets):
            for (x, y, w, h), s, c in zip(det["boxes"], det["scores"], det["labels"]):
                rows.append((img_id, int(c), float(x), float(y), float(w), float(h), float(s)))
        if not rows:
            return empty_annotations(with_score=True)
        df = pd.DataFrame(rows, columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
        df.insert(0, "id", np.arange(1, len(df) + 1))
        df["area"] = df["w"] * df["h"]
        df["iscrowd"] = 0
        return df


def to_results(preds: pd.DataFrame) -> list[dict[str, Any]]:
    """An annotations-shaped prediction frame as a COCO results list."""
    return [{"image_id": int(i), "category_id": int(c), "bbox": [round(float(x), 3), round(float(y), 3),
                                                                  round(float(w), 3), round(float(h), 3)],
             "score": round(float(s), 5)}
            for i, c, x, y, w, h, s in zip(preds["image_id"], preds["category_id"], preds["x"], preds["y"],
                                           preds["w"], preds["h"], preds["score"])]


def predict(model_dir: str | os.PathLike, dataset: Dataset, out: str | os.PathLike | None = None,
            score_threshold: float = 0.001, batch_size: int = 16, device: str = "auto") -> pd.DataFrame:
    """Predict every frame of ``dataset`` with a saved model; with ``out``, write COCO results JSON."""
    from ..atomic import write_json

    preds = Predictor.load(model_dir, device).predict_dataset(dataset, score_threshold, batch_size, progress=True)
    if out is not None:
        write_json(out, to_results(preds))
    return preds
