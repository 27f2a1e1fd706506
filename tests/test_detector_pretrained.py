"""Starting from pretrained weights: torchvision names resolved through its cache (a stand-in file in a
temporary TORCH_HOME, never the network), the offline error when the file is not there, a real
fine-tune from a local checkpoint that trains, predicts and evaluates, and mismatched checkpoints."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from qualmet.cli import main
from qualmet.detector.predictor import Predictor
from qualmet.detector.pretrained import initialise
from qualmet.detector.recipe import build_model, get_recipe
from qualmet.detector.train import train
from qualmet.errors import QualmetError
from qualmet.evaluate import evaluate
from qualmet.formats import load_coco

from .detector_helpers import ellipses

COCO_FILE = "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
IMAGENET_FILE = "mobilenet_v3_large-8738ca79.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache; any download attempt fails at once, as it does offline."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url, dst, *a, **kw):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home / "hub" / "checkpoints"


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_coco_weights_come_from_the_cache_and_the_class_head_is_rebuilt(torch_home):
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(5)
    coco = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).state_dict()
    torch.save(coco, torch_home / COCO_FILE)
    rec = get_recipe(weights="COCO_V1", input_size=64)
    torch.manual_seed(0)
    model = build_model(rec, 2)
    fresh_cls = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.classification_head.")}
    info = initialise(model, rec)
    got = model.state_dict()
    shared = [k for k in got if k in coco and got[k].shape == coco[k].shape]
    assert any(k.startswith("backbone.") for k in shared) and any(k.startswith("head.regression") for k in shared)
    assert _same(got, coco, shared)
    other_shape = [k for k in got if k in coco and got[k].shape != coco[k].shape]  # 3 classes, not 91
    assert other_shape and all(k in fresh_cls for k in other_shape)  # only the class scores' convs
    assert _same(got, fresh_cls, other_shape)  # left as initialised for this data set's classes
    assert set(got) == set(coco)
    assert info["source"].endswith("COCO_V1") and not info["backbone_only"]


def test_imagenet_backbone_from_the_cache_gives_the_full_tail(torch_home):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(6)
    torch.save(mobilenet_v3_large(weights=None).state_dict(), torch_home / IMAGENET_FILE)
    rec = get_recipe(weights_backbone="IMAGENET1K_V1", input_size=64)
    model = build_model(rec, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = initialise(model, rec)
    after = model.state_dict()
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert info["backbone_only"] and changed and all(k.startswith("backbone.features.") for k in changed)
    assert after["backbone.features.1.1.block.0.0.weight"].shape[0] == 960  # the full tail, as torchvision builds it
    scratch = build_model(get_recipe(input_size=64), 1).state_dict()  # torchvision's own builder, reduced tail
    assert set(scratch) == set(after) and scratch["backbone.features.1.1.block.0.0.weight"].shape[0] == 480
    # rebuilt from the recipe alone (as Predictor.load does): the same architecture, nothing downloaded
    assert {k: v.shape for k, v in build_model(rec, 1).state_dict().items()} == {k: v.shape for k, v in after.items()}


def test_offline_named_weights_are_one_line_naming_the_file(torch_home, tmp_path, capsys):
    data = ellipses(tmp_path / "data", 4, 64, seed=1)
    with pytest.raises(QualmetError) as err:
        train(data, tmp_path / "m", iters=1, device="cpu", input_size=64, weights="DEFAULT", progress=False)
    msg = str(err.value)
    assert COCO_FILE in msg and str(torch_home) in msg and "checkpoint = PATH" in msg and "\n" not in msg
    rc = main(["train", str(data), "--out", str(tmp_path / "cli"), "--iters", "1", "--input-size", "64",
               "--device", "cpu", "--weights-backbone", "IMAGENET1K_V1"])
    err_out = capsys.readouterr().err
    assert rc == 2 and IMAGENET_FILE in err_out and "Traceback" not in err_out and len(err_out.strip().splitlines()) == 1
    with pytest.raises(QualmetError, match="weights = 'IMAGENET1K_V1': unknown; SSDLite320"):
        train(data, tmp_path / "m2", iters=1, device="cpu", input_size=64, weights="IMAGENET1K_V1", progress=False)


def test_mismatched_checkpoints_name_the_keys(tmp_path):
    data = ellipses(tmp_path / "data", 4, 64, seed=2)
    rec = get_recipe(input_size=64)
    sd = build_model(rec, 2).state_dict()
    renamed = dict(sd)
    renamed["backbone.features.0.0.0.weight_typo"] = renamed.pop("backbone.features.0.0.0.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    kw = dict(iters=1, device="cpu", input_size=64, batch_size=2, bn_recalib_images=2, val_fraction=0.0,
              progress=False)
    with pytest.raises(QualmetError) as err:
        train(data, tmp_path / "a", checkpoint=str(tmp_path / "renamed.pt"), **kw)
    msg = str(err.value)
    assert "renamed.pt: does not fit the model" in msg and "missing backbone.features.0.0.0.weight " in msg
    assert "unexpected backbone.features.0.0.0.weight_typo" in msg and "\n" not in msg
    with pytest.warns(UserWarning, match="left as initialised"):
        train(data, tmp_path / "b", checkpoint=str(tmp_path / "renamed.pt"), strict=False, **kw)
    torch.save({"x": 1}, tmp_path / "junk.pt")
    with pytest.raises(QualmetError, match="junk.pt: not a state dict"):
        train(data, tmp_path / "c", checkpoint=str(tmp_path / "junk.pt"), **kw)
    with pytest.raises(QualmetError, match="give one of weights, weights_backbone and checkpoint"):
        train(data, tmp_path / "d", checkpoint=str(tmp_path / "junk.pt"), weights="DEFAULT", **kw)
    with pytest.raises(QualmetError, match="nowhere.pt: no such file"):
        train(data, tmp_path / "e", checkpoint=str(tmp_path / "nowhere.pt"), **kw)


@pytest.mark.slow
def test_fine_tune_from_a_local_checkpoint_trains_predicts_and_evaluates(tmp_path):
    base_data = ellipses(tmp_path / "base", 16, 96, seed=3)  # two classes
    kw = dict(device="cpu", input_size=96, batch_size=4, bn_recalib_images=16, eval_every=30, progress=False)
    base = train(base_data, tmp_path / "base_model", iters=60, seed=0, val_fraction=0.0, **kw)
    # the fine-tuning set has one class: the class head is rebuilt, everything else loaded
    ds = load_coco(ellipses(tmp_path / "ft", 12, 96, seed=4))
    ds.annotations = ds.annotations[ds.annotations["category_id"] == 1].reset_index(drop=True)
    ds.categories = ds.categories[ds.categories["id"] == 1].reset_index(drop=True)
    kw["eval_every"] = 10
    tuned = train(ds, tmp_path / "tuned", iters=30, seed=1, val_fraction=0.25, checkpoint=str(base.out_dir), **kw)
    scratch = train(ds, tmp_path / "scratch", iters=30, seed=1, val_fraction=0.25, **kw)
    assert tuned.log["val_AP"].notna().all()
    loaded = Predictor.load(tmp_path / "tuned", device="cpu")
    assert loaded.recipe.checkpoint == str(base.out_dir) and [c["id"] for c in loaded.categories] == [1]
    a, b = tuned.predictor.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    preds = loaded.predict_dataset(ds)
    assert len(preds) and set(preds["category_id"]) == {1}
    stats = evaluate(ds, preds, out=tmp_path / "eval")["stats"]
    assert stats["AP50"] is not None and (tmp_path / "eval" / "metrics.json").is_file()
    # fine-tuning starts from the base model: 30 iterations later its backbone is still far nearer the
    # base's than the same training from scratch is (equal distances would mean nothing was loaded)
    base_sd, scratch_sd = base.predictor.model.state_dict(), scratch.predictor.model.state_dict()
    keys = [k for k in base_sd if k.startswith("backbone.") and base_sd[k].is_floating_point()]

    def dist(sd):
        return sum(float((sd[k] - base_sd[k]).norm()) for k in keys)

    assert dist(a) < 0.5 * dist(scratch_sd), (dist(a), dist(scratch_sd))
    # a plain state dict file works the same way as the folder
    torch.save(base.predictor.model.state_dict(), tmp_path / "base.pt")
    again = train(ds, tmp_path / "tuned_file", iters=30, seed=1, val_fraction=0.25, checkpoint=str(tmp_path / "base.pt"),
                  **kw)
    c = again.predictor.model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_box_turned_into_an_ignore_region_is_another_training(tmp_path):
    """Same frames and boxes, one of them now an ignore region: resuming the old checkpoint would
    train on the wrong labels, so it is refused."""
    ds = load_coco(ellipses(tmp_path / "d", 4, 64, seed=0))
    kw = dict(iters=2, device="cpu", input_size=64, batch_size=2, bn_recalib_images=2, val_fraction=0.0,
              checkpoint_every=1, progress=False)
    train(ds, tmp_path / "m", **kw)
    ds.annotations.loc[0, "iscrowd"] = 1
    with pytest.raises(QualmetError, match=r"different training \(train_data differ\)"):
        train(ds, tmp_path / "m", **kw)


def test_frozen_bn_keeps_the_backbone_statistics_it_was_loaded_with(tmp_path):
    data = ellipses(tmp_path / "d", 12, 64, seed=5)
    kw = dict(device="cpu", input_size=64, batch_size=4, bn_recalib_images=8, val_fraction=0.0, progress=False)
    base = train(data, tmp_path / "base", iters=10, seed=0, **kw).predictor.model.state_dict()
    frozen = train(data, tmp_path / "frozen", iters=10, seed=1, checkpoint=str(tmp_path / "base"), freeze_bn=True,
                   **kw).predictor.model.state_dict()
    free = train(data, tmp_path / "free", iters=10, seed=1, checkpoint=str(tmp_path / "base"),
                 **kw).predictor.model.state_dict()
    stats = [k for k in base if k.endswith(("running_mean", "running_var"))]
    backbone = [k for k in stats if k.startswith("backbone.")]
    head = [k for k in stats if k.startswith("head.")]
    assert backbone and head
    assert _same(frozen, base, backbone)  # neither training nor recalibration touched them
    assert not _same(free, base, backbone)
    assert not _same(frozen, base, head)  # the head's BN still learns its statistics
    assert not _same(frozen, base, [k for k in base if k.startswith("backbone.") and k.endswith(".weight")])
    reloaded = Predictor.load(tmp_path / "frozen", device="cpu")
    assert reloaded.recipe.freeze_bn and _same(reloaded.model.state_dict(), frozen, stats)
    with pytest.raises(QualmetError, match="freeze_bn .* needs weights"):
        train(data, tmp_path / "scratch", iters=10, freeze_bn=True, **kw)


def test_fine_tune_flags_reach_the_recipe(tmp_path, capsys):
    data = ellipses(tmp_path / "d", 4, 64, seed=6)
    rc = main(["train", str(data), "--out", str(tmp_path / "m"), "--iters", "2", "--input-size", "64", "--device",
               "cpu", "--freeze-bn"])
    err = capsys.readouterr().err
    assert rc == 2 and "freeze_bn" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", str(data), "--out", str(tmp_path / "m"), "--iters", "2", "--input-size", "64", "--device",
               "cpu", "--val-fraction", "0", "--lr", "3e-4", "--warmup-iters", "1"])
    assert rc == 0
    rec = Predictor.load(tmp_path / "m", device="cpu").recipe
    assert (rec.lr, rec.warmup_iters, rec.freeze_bn) == (3e-4, 1, False)
