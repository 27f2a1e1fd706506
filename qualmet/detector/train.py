"""Training the fixed detector: seeded, fixed in iterations, logged, checkpointed and resumable.

Rerunning the same call (or CLI command) after an interruption continues from the last
checkpoint and reaches the same final weights as an uninterrupted run (bitwise on CPU): batches
are a pure function of (seed, iteration) and the checkpoint holds model, optimiser, scheduler,
AMP scaler, RNG states, the log and the partial loss window.

Every file is written atomically (temp file + rename). ``config.json`` is written last and records
the SHA-256 of the other outputs, so a model folder is complete exactly when its ``config.json``
exists and its checksums match; :meth:`Predictor.load` checks ``model.pt`` against it.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .. import __version__, steps
from ..atomic import atomic_path, sha256_file, write_json, write_text
from ..dataset import Dataset
from ..environment import describe, differences, versions
from ..errors import QualmetError
from ..log import bar as progress_bar
from ..log import logger
from ..plots import loss_curves_png
from .data import DetectionData, IterationSampler, collate, split_images
from .ignore import warn_if_unhonoured
from .folder import (OUTPUT_FILES, differences_from, finished_config, load_checkpoint, outputs_intact,
                     remove_stale_temps, save_checkpoint)
from . import pretrained
from .predictor import Predictor, pick_device
from .recipe import MIN_USEFUL_ITERS, Recipe, build_model, get_recipe, lr_factor, param_groups, torch_threads
from .validation import frozen_bn, recalibrate_bn, validate

LOG_COLUMNS = ["iter", "lr", "train_loss", "val_loss", "val_AP", "val_AP50", "elapsed_s"]


def loss_line(row) -> str:
    """One log row as text; the val part only when a val split was scored (arms train without one)."""
    text = f"train loss {row['train_loss']:.4f}"
    if not np.isnan(row["val_loss"]):
        text += f"  val loss {row['val_loss']:.4f}  val mAP {row['val_AP']:.3f}  AP50 {row['val_AP50']:.3f}"
    return text


@dataclass
class TrainResult:
    """What a training leaves behind: its folder, the trained model (eval mode) and its log."""

    out_dir: Path
    predictor: Predictor
    log: pd.DataFrame
    resumed_from: int  # iteration the run started from (0 = fresh)


def _load_dataset(dataset: str | os.PathLike | Dataset, images: str | os.PathLike | None) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    from ..formats import load_coco

    return load_coco(dataset, images=images)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _checked_recipe(recipe: str | Recipe, overrides: dict[str, Any]) -> Recipe:
    """The recipe with ``overrides`` applied (None values ignored), refused when a field is out of range."""
    rec = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    rec = rec.replace(**{k: v for k, v in overrides.items() if v is not None})
    for name in ("iters", "checkpoint_every", "eval_every", "batch_size"):
        if getattr(rec, name) < 1:
            raise QualmetError(f"{name} must be at least 1, got {getattr(rec, name)}")
    if rec.input_size < 32:
        raise QualmetError(f"input_size must be at least 32 px, got {rec.input_size}")
    if rec.threads < 0:
        raise QualmetError(f"threads must be at least 0 (0: torch's default), got {rec.threads}")
    if not rec.lr > 0:
        raise QualmetError(f"lr must be positive, got {rec.lr}")
    rec = pretrained.check(rec)
    if (rec.arch == "ssdlite" and rec.input_size >= 256 and rec.iters < MIN_USEFUL_ITERS
            and not (rec.weights or rec.weights_backbone or rec.checkpoint)):
        warnings.warn(f"{rec.iters} iterations: the from-scratch {rec.name} recipe detects nothing before "
                      f"~{MIN_USEFUL_ITERS} iterations", stacklevel=4)
    return rec


@dataclass
class Plan:
    """What a training is: the checked recipe, its train and val frames, categories and the config that
    config.json and every checkpoint record (a resumed or finished run must match it)."""

    rec: Recipe
    train_ds: Dataset
    val_ds: Dataset | None
    categories: list[dict[str, Any]]
    config: dict[str, Any]


def plan_training(dataset: str | os.PathLike | Dataset, images: str | os.PathLike | None, val_fraction: float,
                  val_dataset: Dataset | None, seed: int, recipe: str | Recipe, overrides: dict[str, Any]) -> Plan:
    """Checks the arguments and splits the frames; refuses what cannot be trained, in one line."""
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):  # NaN fails too
        raise QualmetError(f"val_fraction must be at least 0 and below 1, got {val_fraction}")
    ds = _load_dataset(dataset, images)
    rec = _checked_recipe(recipe, overrides)
    if not len(ds.images):
        raise QualmetError(f"{ds.source}: no images to train on")
    if not len(ds.categories):
        raise QualmetError(f"{ds.source}: no categories")
    if val_dataset is not None:
        train_ds, val_ds = ds, val_dataset
    else:
        tr_ids, va_ids = split_images(ds.images["id"], val_fraction, seed)
        train_ds, val_ds = ds.subset(tr_ids), (ds.subset(va_ids) if va_ids else None)
    categories = [{"id": int(c), "name": str(n)} for c, n in zip(ds.categories["id"], ds.categories["name"])]
    config = {"recipe": rec.to_dict(), "seed": int(seed), "val_fraction": float(val_fraction),
              "categories": categories, "dataset": ds.source, "n_train_images": int(len(train_ds.images)),
              "train_data": steps.dataset_hash(train_ds),  # frames, boxes and ignore regions
              "val_image_ids": [int(i) for i in val_ds.images["id"]] if val_ds is not None else [],
              "qualmet_version": __version__, "environment": versions()}
    return Plan(rec, train_ds, val_ds, categories, config)


@dataclass
class TrainState:
    """Everything the loop advances and a checkpoint holds."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    it: int = 0  # iterations done
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    window: list[float] = field(default_factory=lambda: [0.0, 0])  # loss sum and count since the last log row
    elapsed0: float = 0.0  # seconds spent before this process (a resumed run)

    def checkpoint(self, config: dict[str, Any], elapsed: float) -> dict[str, Any]:
        return {"iter": self.it, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "rng": _rng_state(),
                "log": self.log_rows, "window": self.window, "elapsed_s": elapsed, "config": config}


def start_or_resume(out: Path, plan: Plan, seed: int, dev: torch.device, use_amp: bool) -> TrainState | TrainResult:
    """A fresh seeded state, the state of ``out/checkpoint.pt``, or, when ``out`` already holds this
    training finished (and its checkpoint was deleted), its :class:`TrainResult`. A folder of another
    training is refused."""
    rec, config = plan.rec, plan.config
    ckpt_path = out / "checkpoint.pt"
    _seed_all(seed)
    model = build_model(rec, len(plan.categories)).to(dev)
    opt = torch.optim.AdamW(param_groups(model, rec.weight_decay), lr=rec.lr)
    state = TrainState(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, rec)),
                       torch.amp.GradScaler("cuda", enabled=use_amp))
    if not ckpt_path.is_file() and (out / "config.json").exists():
        # a finished folder whose checkpoint was deleted (to save space): the same training is done, another refused
        finished = finished_config(out)
        diff = ["config.json (unreadable)"] if finished is None else differences_from(finished, config)
        if diff:
            raise QualmetError(f"{out}: holds a model of a different training ({', '.join(diff)} differ) and no "
                               "checkpoint.pt; use another --out folder or delete it")
        if outputs_intact(out):
            logger.info(f"{out}: already trained ({rec.iters} iterations); nothing to do")
            return TrainResult(out, Predictor.load(out, str(dev)), pd.read_csv(out / "train_log.csv"), rec.iters)
        # outputs damaged and nothing to resume from: the same seeded training again (same weights on CPU)
    if not ckpt_path.is_file():
        pretrained.initialise(model, rec)  # a fresh start: the recipe's pretrained weights, if any
        return state
    ck = load_checkpoint(ckpt_path)
    diff = differences_from(ck["config"], config)
    if diff:
        raise QualmetError(f"{out}: holds a checkpoint of a different training ({', '.join(diff)} differ); "
                           "use another --out folder or delete it")
    changed = differences(ck["config"].get("environment"), config["environment"])
    if changed:
        warnings.warn(f"{out}: resuming a checkpoint made with other library versions ({describe(changed)}); "
                      "the result may differ from an uninterrupted run", stacklevel=4)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    state.sched.load_state_dict(ck["scheduler"])
    state.scaler.load_state_dict(ck["scaler"])
    _set_rng_state(ck["rng"])
    state.it, state.log_rows, state.window, state.elapsed0 = ck["iter"], ck["log"], ck["window"], ck["elapsed_s"]
    logger.info(f"{out}: already trained ({rec.iters} iterations); nothing to do" if state.it >= rec.iters
                else f"resuming {out} from iteration {state.it}/{rec.iters}")
    return state


def train_iterations(state: TrainState, loader: Any, rec: Recipe, dev: torch.device, use_amp: bool,
                     after: Callable[[float, dict[str, torch.Tensor]], None]) -> None:
    """The loop, as torchvision's references write ``train_one_epoch``: for each batch, forward (losses),
    a divergence check, backward, gradient clipping, optimiser and scheduler step; then ``after(loss,
    losses)`` logs, checkpoints and reports. The loader yields exactly the remaining iterations."""
    state.model.train()
    for m in frozen_bn(state.model, rec):
        m.eval()
    for imgs, tg in loader:
        imgs = [i.to(dev, non_blocking=True) for i in imgs]
        tg = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in tg]
        with torch.autocast("cuda", enabled=use_amp):
            losses = state.model(imgs, tg)
            loss = sum(losses.values())
        value = loss.item()
        if not math.isfinite(value):
            raise QualmetError(f"training diverged at iteration {state.it + 1}: loss is {value} "
                               f"({ {k: float(v) for k, v in losses.items()} })")
        state.opt.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.opt)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), rec.grad_clip)
        state.scaler.step(state.opt)
        state.scaler.update()
        state.sched.step()
        state.it += 1
        state.window[0] += value
        state.window[1] += 1
        after(value, losses)


@dataclass
class _Reporter:
    """What happens after each iteration: the progress bar, a log row (with validation) every
    ``eval_every``, a checkpoint every ``checkpoint_every``, and the caller's callback."""

    out: Path
    plan: Plan
    state: TrainState
    val: Callable[[], dict[str, float]] | None
    bar: Any
    callback: Callable[[int, dict[str, Any]], None] | None
    t0: float = field(default_factory=time.perf_counter)

    def __call__(self, loss: float, losses: dict[str, torch.Tensor]) -> None:
        st, rec, it = self.state, self.plan.rec, self.state.it
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        elapsed = st.elapsed0 + time.perf_counter() - self.t0
        if it % rec.eval_every == 0 or it == rec.iters:
            row = {"iter": it, "lr": st.opt.param_groups[0]["lr"], "train_loss": st.window[0] / max(1, st.window[1]),
                   "val_loss": np.nan, "val_AP": np.nan, "val_AP50": np.nan, "elapsed_s": elapsed}
            if self.val is not None:
                row.update(self.val())
            st.log_rows.append(row)
            st.window = [0.0, 0]
            log = pd.DataFrame(st.log_rows, columns=LOG_COLUMNS)
            write_text(self.out / "train_log.csv", log.to_csv(index=False))
            loss_curves_png(log, self.out / "loss_curves.png")
            logger.info(f"iter {it}: {loss_line(row)}")
        if it % rec.checkpoint_every == 0 or it == rec.iters:
            save_checkpoint(self.out / "checkpoint.pt",
                             st.checkpoint(self.plan.config, st.elapsed0 + time.perf_counter() - self.t0))
        if self.callback is not None:
            self.callback(it, {"loss": loss, **{k: v.item() for k, v in losses.items()}})


def write_outputs(out: Path, model: torch.nn.Module, config: dict[str, Any], categories: list[dict],
                   log: pd.DataFrame) -> None:
    """model.pt, categories.json, train_log.csv, loss_curves.png, then config.json with their checksums."""
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(out / "categories.json", categories, indent=2)
    write_text(out / "train_log.csv", log.to_csv(index=False))
    loss_curves_png(log, out / "loss_curves.png")
    outputs = {n: {"bytes": (out / n).stat().st_size, "sha256": sha256_file(out / n)} for n in OUTPUT_FILES}
    write_json(out / "config.json", {**config, "outputs": outputs}, indent=2)


def train(dataset: str | os.PathLike | Dataset, out_dir: str | os.PathLike, val_fraction: float = 0.2,
          iters: int | None = None, seed: int = 0, device: str = "auto", recipe: str | Recipe = "ssdlite256",
          images: str | os.PathLike | None = None, val_dataset: Dataset | None = None, progress: bool = False,
          callback: Callable[[int, dict[str, Any]], None] | None = None, **overrides: Any) -> TrainResult:
    """Train the fixed detector on ``dataset`` into ``out_dir`` (model.pt, categories.json,
    train_log.csv, loss_curves.png, checkpoint.pt, and last config.json with their SHA-256).

    ``val_fraction`` of the frames (seeded, by image) are held out for the val loss / mAP log,
    unless ``val_dataset`` is given. Rerunning with the same arguments resumes from the last
    checkpoint. ``overrides`` change recipe fields (e.g. ``input_size=128``); ``callback(it, info)``
    runs after every iteration. Runs with the recipe's torch thread count (``threads``; 0 leaves
    torch's own), restored afterwards. ``progress`` draws a bar on a terminal; messages go to the
    ``qualmet`` logger (:mod:`qualmet.log`).
    """
    plan = plan_training(dataset, images, val_fraction, val_dataset, seed, recipe, {"iters": iters, **overrides})
    with torch_threads(plan.rec.threads):
        return _run(plan, Path(out_dir), seed, device, progress, callback)


def _run(plan: Plan, out: Path, seed: int, device: str, progress: bool,
         callback: Callable[[int, dict[str, Any]], None] | None) -> TrainResult:
    rec = plan.rec
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    dev = pick_device(device)
    use_amp = dev.type == "cuda" and rec.amp
    logger.debug(f"{out}: {rec.name} at {rec.input_size} px, {rec.iters} iterations of {rec.batch_size} on {dev} "
                 f"({torch.get_num_threads()} threads), {len(plan.train_ds.images)} training frames, "
                 f"{0 if plan.val_ds is None else len(plan.val_ds.images)} validation frames")
    state = start_or_resume(out, plan, seed, dev, use_amp)
    if isinstance(state, TrainResult):
        return state
    train_data = DetectionData(plan.train_ds, rec.input_size)
    warn_if_unhonoured(state.model, sum(len(r) for r in train_data.ignores))
    val_data = (DetectionData(plan.val_ds, rec.input_size)
                if plan.val_ds is not None and len(plan.val_ds.images) else None)
    val = None if val_data is None else (
        lambda: validate(state.model, rec, train_data, plan.val_ds, val_data, dev, use_amp, seed))
    sampler = IterationSampler(len(train_data), rec.batch_size, seed, state.it, rec.iters, rec.hflip)
    # frames come from the shared cache, so worker processes would only add start-up and copying
    loader = torch.utils.data.DataLoader(train_data, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    start = state.it
    bar = progress_bar(total=rec.iters, initial=start, desc="train", unit="it", enabled=progress)
    try:
        train_iterations(state, loader, rec, dev, use_amp, _Reporter(out, plan, state, val, bar, callback))
    finally:
        bar.close()
    log = pd.DataFrame(state.log_rows, columns=LOG_COLUMNS)
    recalibrate_bn(state.model, train_data, rec.batch_size, dev, use_amp, rec.bn_recalib_images, seed,
                   keep=frozen_bn(state.model, rec))
    if start < rec.iters or not outputs_intact(out):  # also repairs a folder killed while writing them
        write_outputs(out, state.model, plan.config, plan.categories, log)
    return TrainResult(out, Predictor(state.model, rec, plan.categories, dev), log, start)
