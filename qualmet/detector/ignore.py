"""Ignore regions for the SSD loss: default boxes (anchors) inside a region where objects may be but
are not labelled are neither positives nor background.

torchvision's SSD has no ignore label: every anchor that matches no box at IoU >= 0.5 is background,
and hard-negative mining picks the ``neg_to_pos_ratio`` (3) x #positives background anchors with the
highest classification loss. An unlabelled cell the model correctly finds is then exactly such a
hard negative: the loss teaches it that the cell is background. :class:`IgnoreSSD` removes those
anchors from the negatives pool.

The rule. For anchor ``a`` and ignore region ``r`` (both xyxy in the model-input frame)::

    IoA(a, r) = area(a ∩ r) / area(a)        (the share of the anchor inside the region)
    ignored(a) = max_r IoA(a, r) >= IGNORE_IOA (0.5)  and  a is not a positive

IoA and not IoU, because a region may be much larger than an anchor (a patch of unboxed cells):
an anchor wholly inside a large region has IoA 1 but a tiny IoU, and would stay a negative under an
IoU rule. IoA is also how COCOeval (and :mod:`qualmet.evaluate`) matches detections to crowd regions,
so training and scoring agree on what "inside an ignore region" means. 0.5 mirrors the positive
threshold (IoU 0.5): an anchor counts as looking at the region when most of it lies there. For a
box-sized region (a suspicious box turned into an ignore region) every anchor that would have been a
positive for that box (IoU >= 0.5 implies IoA >= 0.5) is ignored. The rule is class-agnostic: an
SSD's softmax over classes + background cannot ignore one class alone, so ``iscrowd = 1`` of any
class ignores the anchor for all of them.

The loss, per batch, with P the positives, B the mined negatives and N = max(1, |P|)::

    L_cls = (sum_{a in P} CE(a, label_a) + sum_{a in B} CE(a, 0)) / N
    B     = the 3 |P_i| highest-CE anchors of image i among  not P  and  not ignored
    L_box = sum_{a in P} smoothL1(reg_a, encode(gt_a, a)) / N

Ignored anchors are never in P or B, so they contribute exactly zero to both terms and to their
gradients; the normaliser N counts positives only, which ignoring does not change. Positives are
untouched: an anchor that matches a labelled box stays a positive even inside a region.

Inference is unchanged (ignore only shapes the loss), and the class adds no parameters, so a model
trained with it saves and loads as a plain SSD state dict. With no ignore region touching an anchor
the loss is torchvision's own, computed by torchvision's code: bit-identical training.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.ssd import SSD

IGNORE_IOA = 0.5  # share of an anchor inside an ignore region from which it is ignored


def anchor_ioa(anchors: Tensor, regions: Tensor) -> Tensor:
    """(A, K) share of each anchor's area inside each region: area(a ∩ r) / area(a), in [0, 1]."""
    lt = torch.maximum(anchors[:, None, :2], regions[None, :, :2])
    rb = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (anchors[:, 2:] - anchors[:, :2]).clamp(min=0).prod(dim=1)
    # a degenerate anchor has no area to lie anywhere; it is never ignored
    return torch.where(area[:, None] > 0, inter / area.clamp(min=1e-12)[:, None], torch.zeros_like(inter))


def ignored_anchors(anchors: Tensor, regions: Optional[Tensor], matched_idxs: Tensor,
                    threshold: float = IGNORE_IOA) -> Tensor:
    """(A,) bool: anchors with IoA >= ``threshold`` in some region that are not positives
    (``matched_idxs`` < 0, as the SSD matcher marks anchors that match no box)."""
    if regions is None or regions.numel() == 0:
        return torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    inside = (anchor_ioa(anchors, regions.to(anchors)) >= threshold).any(dim=1)
    return inside & (matched_idxs < 0)


class IgnoreSSD(SSD):
    """torchvision's SSD whose training loss honours ``targets[i]["ignore"]``: (K, 4) float xyxy
    regions in the model-input frame, like ``boxes`` (K may be 0; the key may be absent).

    Not constructed directly: :func:`honour_ignore_regions` turns a built SSD into one."""

    ignore_ioa: float = IGNORE_IOA

    def forward(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        # the transform rescales "boxes" but not "ignore": refuse inputs it would rescale rather than
        # misplace the regions (qualmet's inputs are already letterboxed to the fixed size)
        if self.training and targets is not None and any(_regions(t) is not None for t in targets):
            fixed = self.transform.fixed_size
            for img in images:
                if fixed is None or tuple(img.shape[-2:]) != (fixed[1], fixed[0]):
                    raise ValueError(f"ignore regions need inputs of the model's fixed size {fixed}, got an "
                                     f"image of {tuple(img.shape[-2:])}")
        return super().forward(images, targets)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        """torchvision's loss with ignored anchors removed from the negatives (module docstring)."""
        ignored = [ignored_anchors(a, _regions(t), m, self.ignore_ioa)
                   for t, a, m in zip(targets, anchors, matched_idxs)]
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        if not any(bool(ig.any()) for ig in ignored):
            return losses  # nothing ignored: torchvision's numbers, bit for bit
        # the regression term only involves positives, which ignoring leaves alone: torchvision's stands
        return {"bbox_regression": losses["bbox_regression"],
                "classification": self._classification(targets, head_outputs["cls_logits"], matched_idxs,
                                                       torch.stack(ignored))}

    def _classification(self, targets: list[dict[str, Tensor]], cls_logits: Tensor, matched_idxs: list[Tensor],
                        ignored: Tensor) -> Tensor:
        """L_cls with hard-negative mining over the anchors that are neither positive nor ignored."""
        cls_targets = torch.zeros(cls_logits.shape[:2], dtype=torch.int64, device=cls_logits.device)
        for i, (t, m) in enumerate(zip(targets, matched_idxs)):
            pos = m >= 0
            cls_targets[i, pos] = t["labels"][m[pos]].to(torch.int64)
        cls_loss = F.cross_entropy(cls_logits.reshape(-1, cls_logits.size(-1)), cls_targets.reshape(-1),
                                   reduction="none").view(cls_targets.shape)
        positive = cls_targets > 0
        pool = ~positive & ~ignored
        num_negative = self.neg_to_pos_ratio * positive.sum(1, keepdim=True)
        # rank each anchor by its loss among the pool (outside it: -inf, ranked last); "& pool" keeps an
        # image whose pool is smaller than its negative quota from mining positives or ignored anchors
        mined = cls_loss.detach().masked_fill(~pool, -float("inf"))
        rank = mined.sort(1, descending=True)[1].sort(1)[1]
        negative = (rank < num_negative) & pool
        n = max(1, int(positive.sum()))
        return (cls_loss[positive].sum() + cls_loss[negative].sum()) / n


def _regions(target: dict[str, Tensor]) -> Optional[Tensor]:
    """The target's ignore regions, or None when it has none."""
    r = target.get("ignore")
    return r if r is not None and r.numel() else None


def honour_ignore_regions(model: torch.nn.Module) -> torch.nn.Module:
    """Make a freshly built torchvision ``SSD`` honour ``targets[i]["ignore"]`` in its loss, in place.

    Only the class changes (no parameter, buffer or random draw), so the state dict, the
    initialisation and inference stay those of the plain SSD: a model folder trained with it loads
    into a plain SSD and vice versa."""
    if type(model) is not SSD:
        raise TypeError(f"ignore regions need torchvision's SSD, got {type(model).__name__}")
    model.__class__ = IgnoreSSD
    return model


def warn_if_unhonoured(model: torch.nn.Module, n_regions: int) -> None:
    """Warn when the training frames hold ignore regions (iscrowd = 1) that ``model`` cannot honour:
    detectors other than the SSD train on such regions as background, as they always did."""
    if n_regions and not isinstance(model, IgnoreSSD):
        warnings.warn(f"{n_regions} ignore region(s) (iscrowd = 1) in the training frames: the "
                      f"{type(model).__name__} detector cannot ignore them and treats them as background; "
                      "use the ssdlite recipe to honour them", stacklevel=3)
