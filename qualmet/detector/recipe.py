"""The detector recipe: one dataclass that fixes architecture, input size, optimiser, schedule and
augmentation, and the model builder. Trainings are fixed in iterations, never in wall-clock time.

Default ``ssdlite256``: SSDlite MobileNetV3-Large from scratch (no pretrained weights), 256x256
letterboxed input, batch 8, AdamW (lr 1e-3, weight decay 1e-4, none on norm/bias), 50 warm-up
iterations then cosine decay to 0, horizontal flip p=0.5, gradient clipping at norm 10, 600 iterations, then the BN statistics are recomputed over
256 training frames (from scratch the running averages lag the weights and eval-mode output is useless).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

# Below this many iterations the default recipe detects nothing at all (measured: ~400 from scratch).
MIN_USEFUL_ITERS = 400


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run apart from the data and the seed."""

    name: str = "ssdlite256"
    arch: str = "ssdlite"  # "ssdlite" | "fcos_resnet18" | "retinanet_resnet18"
    input_size: int = 256  # images are letterboxed (top-left, aspect kept) into a square of this side
    batch_size: int = 8
    iters: int = 600
    lr: float = 1e-3
    weight_decay: float = 1e-4  # not applied to norm weights and biases
    warmup_iters: int = 50  # linear warm-up from lr/100, then cosine decay to 0
    grad_clip: float = 10.0  # max gradient L2 norm
    hflip: float = 0.5  # horizontal flip probability
    eval_every: int = 50  # iterations between train/val loss (and val mAP) log rows
    checkpoint_every: int = 100  # iterations between resumable checkpoints
    bn_recalib_images: int = 256  # BN statistics recomputed over this many training frames (see train.py)
    # the backbone's BN layers keep the statistics they were loaded with (eval mode while training, not
    # recalibrated); only with a pretrained start. Measured, not the default: docs/detector.md
    freeze_bn: bool = False
    amp: bool = True  # mixed precision; only ever used on CUDA
    detections_per_img: int = 100
    # torch intra-op threads while training and predicting; 0 leaves torch's setting (one per physical
    # core). Part of the recipe because the thread count changes float sums, so results are bitwise
    # repeatable only for the same count. On a machine shared with other work 1 thread can be several
    # times faster than 2 (measured: docs/benchmarks.md, Arm profile).
    threads: int = 0
    # where training starts (see pretrained.py); all empty: from scratch. At most one of the three.
    weights: str = ""  # torchvision's name for whole-detector weights, e.g. "DEFAULT", "COCO_V1"
    weights_backbone: str = ""  # torchvision's name for backbone weights, e.g. "IMAGENET1K_V1"
    checkpoint: str = ""  # a local state dict file (whole detector or backbone) or a qualmet model folder
    strict: bool = True  # keys of the weights that do not fit the model: an error (else a warning)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Each field holds its declared type: a model folder's or a spec's ``input_size = "256"`` is an
        error here, not a crash deep inside torchvision."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = _FIELD_TYPES[str(f.type).split("[")[0]]
            if isinstance(v, bool) and want is not bool or not isinstance(v, want):
                from ..errors import QualmetError

                raise QualmetError(f"recipe field {f.name} must be {str(f.type).split('[')[0]}, got {v!r}")

    def replace(self, **kw: Any) -> "Recipe":
        """A copy with some fields changed (unknown names raise)."""
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            from ..errors import QualmetError

            raise QualmetError(f"recipe has unknown field(s) {', '.join(unknown)}")
        return cls(**d)


_FIELD_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict}

RECIPES: dict[str, Recipe] = {
    "ssdlite256": Recipe(),
    # ~4x slower per iteration on CPU (1.2 s/iter, batch 8); anchor-free, stronger on small objects.
    "fcos_resnet18": Recipe(name="fcos_resnet18", arch="fcos_resnet18", lr=5e-4),
    "retinanet_resnet18": Recipe(name="retinanet_resnet18", arch="retinanet_resnet18", lr=5e-4),
}


def get_recipe(name: str = "ssdlite256", **overrides: Any) -> Recipe:
    """A named recipe, with optional field overrides (``None`` values are ignored)."""
    if name not in RECIPES:
        from ..errors import QualmetError

        raise QualmetError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Recipe)})
    if unknown:
        from ..errors import QualmetError

        raise QualmetError(f"recipe has no field(s) {', '.join(unknown)}; fields: "
                           f"{', '.join(f.name for f in dataclasses.fields(Recipe) if f.name != 'extra')}")
    return RECIPES[name].replace(**{k: v for k, v in overrides.items() if v is not None})


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: unchanged), restoring the count after."""
    import torch

    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def build_model(recipe: Recipe, num_classes: int):
    """A freshly initialised torchvision detector for ``num_classes`` object classes (+ background);
    pretrained weights the recipe names are loaded by :func:`.pretrained.initialise`, not here.

    The builder's own resize is replaced by a fixed ``input_size`` square transform; inputs are
    already letterboxed to that size, so the transform only normalises.
    """
    import torch.nn as nn
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    s = int(recipe.input_size)
    if recipe.arch == "ssdlite":
        from .ignore import honour_ignore_regions

        # iscrowd = 1 regions out of its loss; same weights and inference
        model = honour_ignore_regions(_ssdlite(recipe, num_classes))
        mean, std = [0.5] * 3, [0.5] * 3
    elif recipe.arch in ("fcos_resnet18", "retinanet_resnet18"):
        from torchvision.models import resnet18
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
        if recipe.arch == "fcos_resnet18":
            from torchvision.models.detection import FCOS

            backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4],
                                             extra_blocks=LastLevelP6P7(256, 256))
            model = FCOS(backbone, num_classes=num_classes + 1, min_size=s, max_size=s,
                         detections_per_img=recipe.detections_per_img, score_thresh=0.001)
        else:
            from torchvision.models.detection import RetinaNet

            backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4],
                                             extra_blocks=LastLevelP6P7(512, 256))
            model = RetinaNet(backbone, num_classes=num_classes + 1, min_size=s, max_size=s,
                              detections_per_img=recipe.detections_per_img, score_thresh=0.001)
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        from ..errors import QualmetError

        raise QualmetError(f"unknown architecture {recipe.arch!r}")
    model.transform = GeneralizedRCNNTransform(s, s, mean, std, size_divisible=1, fixed_size=(s, s))
    return model


def _ssdlite(recipe: Recipe, num_classes: int):
    """SSDlite320 MobileNetV3-Large for ``num_classes`` + background. From scratch exactly torchvision's
    builder; with a pretrained classification backbone the same assembly with the full MobileNetV3 tail
    (as torchvision builds it for pretrained backbones), without downloading anything: the weights
    are loaded afterwards (:mod:`.pretrained`), so a saved model is rebuilt from its recipe alone."""
    from functools import partial

    import torch.nn as nn
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

    from .pretrained import uses_full_tail

    if not uses_full_tail(recipe):
        return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                             detections_per_img=recipe.detections_per_img)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=False), 6, norm)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    channels = det_utils.retrieve_out_channels(backbone, (320, 320))
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
    return SSD(backbone, anchors, (320, 320), num_classes + 1, head=head, score_thresh=0.001, nms_thresh=0.55,
               detections_per_img=recipe.detections_per_img, topk_candidates=300, image_mean=[0.5] * 3,
               image_std=[0.5] * 3)


def param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on conv/linear weights only, none on norm weights or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(it: int, recipe: Recipe) -> float:
    """Multiplier of the base lr at iteration ``it``: linear warm-up, then cosine decay to 0."""
    import math

    w = max(0, int(recipe.warmup_iters))
    if it < w:
        return 0.01 + 0.99 * it / w
    t = (it - w) / max(1, recipe.iters - w)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
