"""Ignore regions (iscrowd = 1) in the SSD loss: the anchors of a region contribute exactly zero
loss and gradient, the same anchors without the region are mined negatives with non-zero loss,
DetectionData places regions exactly like boxes, training without regions is bit-identical to
torchvision's SSD, and a training with a crowd annotation runs end to end and predicts.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou

from qualmet.dataset import Dataset
from qualmet.detector.data import DetectionData, IterationSampler, collate
from qualmet.detector.ignore import IgnoreSSD, anchor_ioa, ignored_anchors, warn_if_unhonoured
from qualmet.detector.predictor import Predictor
from qualmet.detector.recipe import build_model, get_recipe, param_groups
from qualmet.detector.train import train
from qualmet.evaluate import coco_eval
from qualmet.formats import load_coco

from .detector_helpers import ellipses

SIZE = 128
BOX = [10.0, 10.0, 50.0, 50.0]  # the one labelled box of image 0
REGION = [64.0, 64.0, 128.0, 128.0]  # its ignore region: the bottom-right quadrant, far from the box


def _model(seed: int = 0) -> IgnoreSSD:
    torch.manual_seed(seed)
    m = build_model(get_recipe(input_size=SIZE), 2)
    assert type(m) is IgnoreSSD
    return m.train()


def _batch(with_region: bool):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]  # 2 frames: BN needs > 1 value
    region = torch.tensor([REGION]) if with_region else torch.zeros(0, 4)
    targets = [{"boxes": torch.tensor([BOX]), "labels": torch.tensor([1]), "ignore": region},
               {"boxes": torch.tensor([[60.0, 20.0, 100.0, 90.0]]), "labels": torch.tensor([2]),
                "ignore": torch.zeros(0, 4)}]
    return images, targets


def _pieces(model, images, targets):
    """What SSD.forward hands to compute_loss: transformed targets, head outputs, anchors, matches."""
    il, tg = model.transform(images, targets)
    feats = list(model.backbone(il.tensors).values())
    head = model.head(feats)
    anchors = model.anchor_generator(il, feats)
    matched = [model.proposal_matcher(box_iou(t["boxes"], a)) for t, a in zip(tg, anchors)]
    return tg, head, anchors, matched


def _inside(anchors: torch.Tensor, region: list[float]) -> torch.Tensor:
    """Anchors with at least half their area inside ``region``, written out independently of ignore.py."""
    x1, y1, x2, y2 = anchors.unbind(1)
    iw = (torch.clamp(x2, max=region[2]) - torch.clamp(x1, min=region[0])).clamp(min=0)
    ih = (torch.clamp(y2, max=region[3]) - torch.clamp(y1, min=region[1])).clamp(min=0)
    return iw * ih >= 0.5 * (x2 - x1) * (y2 - y1)


def test_the_regions_anchors_contribute_exactly_zero_loss():
    model = _model()
    images, targets = _batch(with_region=True)
    with torch.no_grad():
        tg, head, anchors, matched = _pieces(model, images, targets)
    mask = _inside(anchors[0], REGION) & (matched[0] < 0)
    assert 20 < int(mask.sum()) < len(mask) // 2 and int((matched[0] >= 0).sum()) > 0
    torch.testing.assert_close(ignored_anchors(anchors[0], tg[0]["ignore"], matched[0]), mask, rtol=0, atol=0)
    # hand-made: the model is confident of class 1 in the region (an unlabelled object it found), so its
    # anchors are the hardest negatives there are
    cls = head["cls_logits"].clone()
    cls[0, mask, 1] += 6.0
    reg = head["bbox_regression"].clone()

    def loss(compute, tgts, c, r, a, m):
        c, r = c.clone().requires_grad_(), r.clone().requires_grad_()
        out = compute(model, tgts, {"cls_logits": c, "bbox_regression": r}, a, m)
        gc, gr = torch.autograd.grad(out["classification"] + out["bbox_regression"], (c, r), allow_unused=True)
        return out, gc, torch.zeros_like(r) if gr is None else gr

    no_region = [{k: v for k, v in t.items() if k != "ignore"} for t in tg]
    # (a) with the region: exactly the loss of image 0 with those anchors deleted by hand (torchvision's loss)
    keep = ~mask
    ign, g_cls, g_reg = loss(IgnoreSSD.compute_loss, tg[:1], cls[:1], reg[:1], anchors[:1], matched[:1])
    ref, _, _ = loss(SSD.compute_loss, no_region[:1], cls[:1, keep], reg[:1, keep], [anchors[0][keep]],
                     [matched[0][keep]])
    assert torch.equal(ign["classification"], ref["classification"])
    assert torch.equal(ign["bbox_regression"], ref["bbox_regression"])
    assert not g_cls[0, mask].any() and not g_reg[0, mask].any()  # exactly zero gradient, every logit
    assert g_cls[0, keep].abs().sum() > 0
    # (b) without the region, the same anchors are mined negatives with non-zero loss and gradient
    plain, p_cls, _ = loss(IgnoreSSD.compute_loss, no_region[:1], cls[:1], reg[:1], anchors[:1], matched[:1])
    assert int((p_cls[0, mask].abs().sum(1) > 0).sum()) > 0
    assert plain["classification"] > ign["classification"] + 1.0
    assert torch.equal(plain["bbox_regression"], ign["bbox_regression"])  # positives untouched
    # on the 2-frame batch only the region's anchors change: frame 1's gradient is the same bit for bit
    _, b_cls, _ = loss(IgnoreSSD.compute_loss, tg, cls, reg, anchors, matched)
    _, n_cls, _ = loss(IgnoreSSD.compute_loss, no_region, cls, reg, anchors, matched)
    assert torch.equal(b_cls[1], n_cls[1]) and not b_cls[0, mask].any() and n_cls[0, mask].any()


def test_the_forward_pass_carries_the_regions_to_the_loss():
    model = _model()
    images, with_region = _batch(with_region=True)
    _, without = _batch(with_region=False)
    with torch.no_grad():
        _, _, anchors, matched = _pieces(model, images, with_region)
    mask = _inside(anchors[0], REGION) & (matched[0] < 0)

    def confident_in_the_region(module, args, out):  # as in the test above: its anchors are hard negatives
        out["cls_logits"][0, mask, 1] += 6.0
        return out

    model.head.register_forward_hook(confident_in_the_region)
    with torch.no_grad():
        full = model(images, with_region)
        tg, head, anchors, matched = _pieces(model, images, with_region)
        pieces = model.compute_loss(tg, head, anchors, matched)
        plain = model(images, without)
    assert torch.equal(full["classification"], pieces["classification"])
    assert full["classification"] < plain["classification"] - 1.0
    assert torch.equal(full["bbox_regression"], plain["bbox_regression"])
    with pytest.raises(ValueError, match="fixed size"):
        model([torch.rand(3, 64, 64) for _ in range(2)], with_region)


def test_the_ioa_rule_and_a_region_over_the_whole_frame():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],  # wholly inside the large region: IoA 1, IoU 0.01
                            [95.0, 0.0, 105.0, 10.0],  # half inside: IoA 0.5 exactly
                            [96.0, 0.0, 106.0, 10.0],  # 0.4 inside
                            [0.0, 0.0, 10.0, 10.0]])  # inside, but a positive
    region = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    assert box_iou(anchors[:1], region).item() == pytest.approx(0.01)
    np.testing.assert_allclose(anchor_ioa(anchors, region)[:, 0].numpy(), [1.0, 0.5, 0.4, 1.0], rtol=1e-6)
    matched = torch.tensor([-1, -1, -1, 0])
    assert ignored_anchors(anchors, region, matched).tolist() == [True, True, False, False]
    assert not ignored_anchors(anchors, torch.zeros(0, 4), matched).any()
    # a region over the whole frame leaves fewer candidates than the negative quota: only positives
    # count (torchvision's ranking alone would take ignored anchors as negatives then)
    model = _model()
    images, targets = _batch(with_region=True)
    targets[0]["ignore"] = torch.tensor([[0.0, 0.0, SIZE, SIZE]])
    with torch.no_grad():
        tg, head, anchors, matched = _pieces(model, images, targets)
    cls = head["cls_logits"][:1].clone().requires_grad_()
    out = model.compute_loss(tg[:1], {"cls_logits": cls, "bbox_regression": head["bbox_regression"][:1]},
                             anchors[:1], matched[:1])
    pos = matched[0] >= 0
    ce = torch.nn.functional.cross_entropy(cls[0, pos], tg[0]["labels"][matched[0][pos]], reduction="sum")
    torch.testing.assert_close(out["classification"], ce / int(pos.sum()))
    (g,) = torch.autograd.grad(out["classification"], cls)
    ignored = ignored_anchors(anchors[0], tg[0]["ignore"], matched[0])
    assert not (~pos & ~ignored).any()  # no negative candidate left, quota 3 x positives
    assert not g[0, ~pos].any()


def _with_crowds(path, crowd_of: dict[int, list[float]]):
    """The COCO file at ``path`` with one iscrowd = 1 annotation added per image in ``crowd_of``."""
    d = json.loads(path.read_text())
    for image_id, bbox in crowd_of.items():
        d["annotations"].append({"id": 1000 + image_id, "image_id": image_id, "category_id": 1, "bbox": bbox,
                                 "area": bbox[2] * bbox[3], "iscrowd": 1})
    path.write_text(json.dumps(d))
    return path


def test_detection_data_places_crowds_as_ignore_regions_like_boxes(tmp_path):
    path = ellipses(tmp_path / "d", 3, 64, seed=0)
    ds = load_coco(path)
    first = ds.annotations[ds.annotations.image_id == 1].iloc[0]
    plain = DetectionData(ds, SIZE)
    crowd = DetectionData(load_coco(_with_crowds(path, {1: [float(first.x), float(first.y), float(first.w),
                                                            float(first.h)], 2: [60.0, 60.0, 0.0, 5.0]})), SIZE)
    for flip in (False, True):
        _, t = plain[(0, flip)]
        _, c = crowd[(0, flip)]
        assert torch.equal(c["boxes"], t["boxes"]) and torch.equal(c["labels"], t["labels"])  # not learnt as a box
        assert c["ignore"].shape == (1, 4) and torch.equal(c["ignore"][0], t["boxes"][0])  # placed like it
        assert t["ignore"].shape == (0, 4)
    assert crowd[1][1]["ignore"].shape == (0, 4)  # a zero-width crowd region is dropped like a zero-width box


@pytest.mark.slow
def test_training_without_regions_is_bit_identical_to_torchvisions_ssd(tmp_path):
    data = DetectionData(load_coco(ellipses(tmp_path / "d", 8, 96, seed=2)), 96)
    assert sum(len(r) for r in data.ignores) == 0

    def run(honour: bool):
        torch.manual_seed(3)
        model = build_model(get_recipe(input_size=96), 2).train()
        if not honour:
            model.__class__ = SSD  # the model qualmet built before ignore regions: same init, same draws
        opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3)
        losses = []
        for batch in IterationSampler(len(data), 4, seed=3, start=0, stop=3, hflip=0.5):
            imgs, tg = collate([data[k] for k in batch])
            if not honour:
                tg = [{k: v for k, v in t.items() if k != "ignore"} for t in tg]
            loss = sum(model(imgs, tg).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses), model.state_dict()

    la, sa = run(True)
    lb, sb = run(False)
    assert torch.equal(la, lb)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_training_with_a_crowd_region_runs_end_to_end_and_predicts(tmp_path, monkeypatch):
    path = _with_crowds(ellipses(tmp_path / "d", 8, 96, seed=4), {i: [40.0, 40.0, 50.0, 50.0] for i in range(1, 9)})
    ds = load_coco(path)
    assert int(ds.annotations["iscrowd"].sum()) == 8
    used = []
    original = IgnoreSSD._classification

    def spy(self, targets, cls_logits, matched_idxs, ignored):
        used.append(int(ignored.sum()))
        return original(self, targets, cls_logits, matched_idxs, ignored)

    monkeypatch.setattr(IgnoreSSD, "_classification", spy)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*ignore region")
        res = train(ds, tmp_path / "m", val_fraction=0.25, iters=3, seed=0, device="cpu", input_size=96,
                    batch_size=4, eval_every=3, bn_recalib_images=8, progress=False)
    assert len(used) >= 3 and min(used) > 0  # every training batch had anchors ignored
    assert np.isfinite(res.log["train_loss"]).all()
    pred = Predictor.load(tmp_path / "m", "cpu")
    assert type(pred.model) is IgnoreSSD
    dets = pred.predict_dataset(ds)
    assert set(dets["image_id"]) <= set(ds.images["id"]) and len(dets) > 0


def test_other_detectors_warn_that_they_cannot_ignore():
    model = build_model(get_recipe("retinanet_resnet18", input_size=96), 2)
    with pytest.warns(UserWarning, match="2 ignore region.*RetinaNet.*background"):
        warn_if_unhonoured(model, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unhonoured(model, 0)
        warn_if_unhonoured(_model(), 5)


def test_evaluation_ignores_detections_in_crowd_regions():
    """pycocotools (qualmet.evaluate.coco_eval) already treats iscrowd = 1 as a crowd region: a
    detection inside it that finds no box is neither a true nor a false positive."""
    imgs = [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}]
    cats = [{"id": 1, "name": "cell"}]
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 30], "area": 900, "iscrowd": 0}
    crowd = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 45, 45], "area": 2025, "iscrowd": 1}
    preds = pd.DataFrame({"id": [1, 2], "image_id": [1, 1], "category_id": [1, 1], "x": [5.0, 60.0],
                          "y": [5.0, 60.0], "w": [30.0, 20.0], "h": [30.0, 20.0], "score": [0.5, 0.9]})
    with_crowd, _, _ = coco_eval(Dataset.from_records(imgs, [box, crowd], cats), preds)
    without, _, _ = coco_eval(Dataset.from_records(imgs, [box], cats), preds)
    assert with_crowd["AP50"] == pytest.approx(1.0) and without["AP50"] < 0.9
