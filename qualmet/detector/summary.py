"""Architecture summary of a saved model: main blocks with output shapes and parameter counts,
as a text table and as a boxes-and-arrows diagram."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .predictor import Predictor


@dataclass
class Block:
    name: str
    kind: str
    params: int
    trainable: int
    shape: str  # output shape(s) for a 1-image forward


def _shape(x) -> str:
    if isinstance(x, torch.Tensor):
        return "x".join(str(d) for d in x.shape)
    if isinstance(x, dict):
        return ", ".join(_shape(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return ", ".join(_shape(v) for v in x)
    return type(x).__name__


def main_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The blocks worth drawing: the backbone's stages (or its body + FPN) and the head's branches."""
    out: list[tuple[str, torch.nn.Module]] = []
    bb = model.backbone
    if hasattr(bb, "body"):  # resnet + FPN
        out += [(f"backbone.body.{n}", m) for n, m in bb.body.named_children()]
        out.append(("backbone.fpn", bb.fpn))
    else:  # SSD feature extractor: features (stages) + extra layers
        feats = getattr(bb, "features", None)
        if feats is not None:
            out += [(f"backbone.features.{n}", m) for n, m in feats.named_children()]
        if hasattr(bb, "extra"):
            out += [(f"backbone.extra.{n}", m) for n, m in bb.extra.named_children()]
    out += [(f"head.{n}", m) for n, m in model.head.named_children()]
    return out


def describe(model: torch.nn.Module, input_size: int, layers: bool = False) -> list[Block]:
    """One row per main block (and, with ``layers``, per layer inside it), output shapes taken from
    a forward pass on one blank image."""
    blocks = []
    for n, m in main_blocks(model):
        blocks.append((n, m))
        kids = list(m.named_children())
        if layers and len(kids) > 1:
            blocks += [(f"  {n}.{k}", c) for k, c in kids]
    shapes: dict[str, str] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, _shape(o))) for n, m in blocks]
    was = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            model([torch.zeros(3, input_size, input_size, device=dev)])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return [Block(n, type(m).__name__, sum(p.numel() for p in m.parameters()),
                  sum(p.numel() for p in m.parameters() if p.requires_grad), shapes.get(n, "-")) for n, m in blocks]


def summary(model_dir: str | os.PathLike | Predictor, diagram: str | os.PathLike | None = None) -> str:
    """Text summary (architecture, input size, blocks with output shapes, parameter counts); with
    ``diagram``, also draw the blocks as a PNG."""
    p = model_dir if isinstance(model_dir, Predictor) else Predictor.load(model_dir, device="cpu")
    r = p.recipe
    rows = describe(p.model, r.input_size, layers=True)
    total = sum(q.numel() for q in p.model.parameters())
    trainable = sum(q.numel() for q in p.model.parameters() if q.requires_grad)
    lines = [f"recipe {r.name}: {type(p.model).__name__} ({r.arch}), input {r.input_size}x{r.input_size}x3 "
             f"(letterboxed), {len(p.categories)} classes + background: "
             + ", ".join(c["name"] for c in p.categories),
             f"{'block / layer':<30} {'type':<26} {'params':>10}  output shape (1 image)"]
    for b in rows:
        lines.append(f"{b.name:<30} {b.kind:<26} {b.params:>10,}  {b.shape}")
    lines.append("(the head reads every backbone/extra output: one prediction per anchor location)")
    lines.append(f"total parameters {total:,} ({trainable:,} trainable)")
    text = "\n".join(lines)
    if diagram is not None:
        draw([b for b in rows if not b.name.startswith(" ")], r.input_size, type(p.model).__name__, total, diagram)
    return text


def draw(rows: list[Block], input_size: int, title: str, total: int, path: str | os.PathLike) -> Path:
    """Boxes-and-arrows diagram: input, each main block (type, params, output shape), outputs."""
    from ..plots import model_diagram_png

    items = [("input", f"3x{input_size}x{input_size}", "")] + \
            [(b.name, f"{b.kind}  {b.params:,} params", b.shape) for b in rows] + \
            [("postprocess", "decode boxes, NMS", "boxes, scores, labels")]
    return model_diagram_png(items, f"{title}: {total:,} parameters", path)
