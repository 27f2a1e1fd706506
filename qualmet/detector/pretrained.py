"""Starting a training from pretrained weights instead of from scratch.

Three sources, set in the recipe (and so in ``qualmet train``/``crossval`` flags and an experiment's
``[detector]`` table):

- ``weights``: torchvision's weight name for the whole detector (``"DEFAULT"``, ``"COCO_V1"``);
- ``weights_backbone``: torchvision's weight name for the classification backbone (``"IMAGENET1K_V1"``);
- ``checkpoint``: a local file or folder: a torchvision state dict of the whole detector or of the
  backbone alone, or a qualmet model folder (its ``model.pt``).

Named weights are fetched by torchvision into its cache (``$TORCH_HOME/hub/checkpoints``); offline,
a file missing there is one error line saying where to put it or how to pass it as ``checkpoint``.
The classification head is rebuilt (left as initialised) when the class count differs; any other
key missing, unexpected or of another shape is an error naming it, or a warning with ``strict = false``.

The architecture follows from the recipe alone, so :meth:`Predictor.load` rebuilds a fine-tuned model
without reading these files again: SSDlite keeps MobileNetV3's full tail when its backbone is
pretrained (as torchvision builds it) and the reduced tail otherwise.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import QualmetError
from .recipe import Recipe

# keys of the class scores: rebuilt, not loaded, when the checkpoint has another number of classes
CLASS_HEAD = ("head.classification_head.",)


def _weight_enum(arch: str, part: str) -> Any:
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    table = {("ssdlite", "weights"): SSDLite320_MobileNet_V3_Large_Weights,
             ("ssdlite", "weights_backbone"): MobileNet_V3_Large_Weights,
             ("fcos_resnet18", "weights_backbone"): ResNet18_Weights,
             ("retinanet_resnet18", "weights_backbone"): ResNet18_Weights}
    if (arch, part) not in table:
        raise QualmetError(f"recipe {part}: torchvision has no {part.replace('_', ' ')} for architecture {arch}; "
                           "pass a local file with checkpoint = PATH")
    return table[(arch, part)]


def resolve_weights(arch: str, part: str, name: str) -> Any:
    """torchvision's weights entry for ``name`` ("DEFAULT", "COCO_V1", "IMAGENET1K_V1", ...)."""
    enum = _weight_enum(arch, part)
    try:
        return enum[name]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise QualmetError(f"recipe {part} = {name!r}: unknown; {enum.__name__} has {names}") from None


def hub_state_dict(weights: Any, part: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision ``weights``, from its cache or downloaded into it. Offline and not
    cached: one line naming the file, the folder torchvision reads, and the local-file alternative."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    file = hub / os.path.basename(urlparse(weights.url).path)
    if not file.is_file():
        try:
            torch.hub.download_url_to_file(weights.url, str(file), progress=False)
        except Exception as exc:  # noqa: BLE001 - URLError, socket errors, HTTP errors, disk errors
            raise QualmetError(
                f"{part} {weights}: {file.name} is not in torchvision's cache ({hub}; set TORCH_HOME to move it) "
                f"and could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"copy {file.name} there from a machine with network ({weights.url}), or pass a local file "
                "with checkpoint = PATH (--checkpoint PATH)") from None
    return _read_state_dict(file)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only (never arbitrary pickled objects); a ``{"model": ...}`` or ``{"state_dict": ...}``
    wrapper is opened."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, pickle and zip errors
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise QualmetError(f"{path}: cannot be read as a state dict of tensors ({type(exc).__name__}: {first})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise QualmetError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return sd


def checkpoint_file(path: str) -> Path:
    """The weights file of ``checkpoint = PATH``: the file itself, or a qualmet model folder's model.pt."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "model.pt").is_file():
            raise QualmetError(f"checkpoint {p}: a folder without model.pt (not a qualmet model folder)")
        return p / "model.pt"
    if not p.is_file():
        raise QualmetError(f"checkpoint {p}: no such file or folder")
    return p


def backbone_kind(sd: dict[str, torch.Tensor]) -> str:
    """"detector" (SSD/FCOS/RetinaNet keys, or only their ``backbone.`` part) or "classifier" (a
    MobileNetV3 / ResNet classification model, whose layers the detector's backbone reuses)."""
    if any(k.startswith(("backbone.", "head.")) for k in sd):
        return "detector"
    return "classifier"


def full_tail(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a MobileNetV3-Large classifier state dict has the full tail (ImageNet weights) rather
    than the reduced one SSDlite uses from scratch (its last conv has 960 channels, not 480)."""
    w = sd.get("features.16.0.weight")
    return w is None or int(w.shape[0]) == 960


def classifier_to_backbone(arch: str, sd: dict[str, torch.Tensor], reduced_tail: bool) -> dict[str, torch.Tensor]:
    """A classification model's state dict renamed to the detector's backbone keys (its classifier
    left out). The MobileNet body is split into stages by torchvision's extractor, so it is mapped by
    building that extractor around the loaded body."""
    if arch == "ssdlite":
        from functools import partial

        from torchvision.models import mobilenet_v3_large
        from torchvision.models.detection.ssdlite import _mobilenet_extractor

        norm = partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03)
        body = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=reduced_tail)
        _load_strict(body, sd, "backbone")
        ext = _mobilenet_extractor(body, 6, norm)
        return {f"backbone.{k}": v for k, v in ext.state_dict().items() if k.startswith("features.")}
    return {f"backbone.body.{k}": v for k, v in sd.items() if not k.startswith("fc.")}


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(sd)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip() and "Error(s)" not in ln), str(exc))
        raise QualmetError(f"{what}: does not fit the architecture ({first[:300]})") from None


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, strict: bool,
              covers: str = "") -> list[str]:
    """Copy ``sd`` into ``model``. Class-score keys of another shape are skipped (the head is rebuilt
    for this data set's classes); ``sd`` is expected to hold every key starting with ``covers``
    ("backbone." for a backbone alone), the others stay as initialised.
    Anything else missing, unexpected or of another shape is a QualmetError naming it, or with
    ``strict=False`` a warning. Returns the keys left as initialised."""
    own = model.state_dict()
    wrong_shape = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    rebuilt = [k for k in wrong_shape if k.startswith(CLASS_HEAD)]
    bad_shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape if k not in rebuilt]
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd and k.startswith(covers) and not k.endswith("num_batches_tracked")]
    problems = [f"{name} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
                for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs:", bad_shape))
                if keys]
    if problems:
        msg = f"{source}: does not fit the model: {'; '.join(problems)}"
        if strict:
            raise QualmetError(msg + "; set strict = false (--no-strict) to load the rest")
        warnings.warn(msg + "; those keys are left as initialised (strict = false)", stacklevel=3)
    keep = {k: v for k, v in sd.items() if k in own and k not in wrong_shape}
    model.load_state_dict({**own, **keep})
    return sorted(set(own) - set(keep))


def initialise(model: torch.nn.Module, rec: Recipe) -> dict[str, Any]:
    """Load the recipe's pretrained weights into a freshly built ``model`` (nothing to do from
    scratch); returns what was loaded, for config.json."""
    if rec.checkpoint:
        path = checkpoint_file(rec.checkpoint)
        sd = _read_state_dict(path)
        source = str(path)
    elif rec.weights:
        sd = hub_state_dict(resolve_weights(rec.arch, "weights", rec.weights), "weights")
        source = f"torchvision {rec.arch} weights {rec.weights}"
    elif rec.weights_backbone:
        sd = hub_state_dict(resolve_weights(rec.arch, "weights_backbone", rec.weights_backbone), "weights_backbone")
        source = f"torchvision backbone weights {rec.weights_backbone}"
    else:
        return {}
    if backbone_kind(sd) == "classifier":  # the classifier's layers: the extractor's extra blocks stay new
        sd = classifier_to_backbone(rec.arch, sd, reduced_tail=not uses_full_tail(rec))
        covers = "backbone.features." if rec.arch == "ssdlite" else "backbone.body."
    else:
        covers = "" if any(k.startswith("head.") for k in sd) else "backbone."
    left = load_into(model, sd, source, rec.strict, covers)
    return {"source": source, "backbone_only": covers != "", "left_as_initialised": len(left)}


def uses_full_tail(rec: Recipe) -> bool:
    """SSDlite's MobileNetV3 tail: full with a pretrained classification backbone (torchvision's
    choice), reduced from scratch or from a whole detector (COCO weights have the reduced tail)."""
    return rec.arch == "ssdlite" and (bool(rec.weights_backbone) or rec.extra.get("backbone_tail") == "full")


def check(rec: Recipe) -> Recipe:
    """The recipe with its pretrained sources checked before any training starts (one of them at
    most; the names known to torchvision; the checkpoint present); a classifier checkpoint's tail is
    recorded in ``extra`` so the architecture can be rebuilt from the recipe alone."""
    given = [n for n in ("weights", "weights_backbone", "checkpoint") if getattr(rec, n)]
    if len(given) > 1:
        raise QualmetError(f"recipe: give one of weights, weights_backbone and checkpoint, not {' and '.join(given)}")
    if rec.freeze_bn and not given:
        raise QualmetError("recipe: freeze_bn keeps the backbone's loaded BN statistics, so it needs weights, "
                           "weights_backbone or checkpoint (from scratch there are none to keep)")
    if rec.weights:
        resolve_weights(rec.arch, "weights", rec.weights)
    if rec.weights_backbone:
        resolve_weights(rec.arch, "weights_backbone", rec.weights_backbone)
    if rec.checkpoint and rec.arch == "ssdlite":
        sd = _read_state_dict(checkpoint_file(rec.checkpoint))
        if backbone_kind(sd) == "classifier" and full_tail(sd):
            return rec.replace(extra={**rec.extra, "backbone_tail": "full"})
    return rec
