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

import copy
import hashlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..atomic import atomic_path, sha256_file, write_json, write_text
from ..dataset import Dataset, labels_sha256
from ..errors import QualmetError
from ..environment import describe, differences, versions
from ..evaluate import coco_eval
from .data import DetectionData, IterationSampler, collate, split_images, to_tensor, unletterbox
from .predictor import Predictor, pick_device
from .recipe import MIN_USEFUL_ITERS, Recipe, build_model, get_recipe, lr_factor, param_groups, torch_threads

LOG_COLUMNS = ["iter", "lr", "train_loss", "val_loss", "val_AP", "val_AP50", "elapsed_s"]
# Final outputs whose checksums config.json records (config.json itself is written after them).
OUTPUT_FILES = ("model.pt", "categories.json", "train_log.csv", "loss_curves.png")


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


def _bn_eval(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _batches(data: DetectionData, batch_size: int, order: list[int] | None = None):
    order = list(range(len(data))) if order is None else order
    for s in range(0, len(order), batch_size):
        yield collate([data[i] for i in order[s:s + batch_size]])


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, data: DetectionData, batch_size: int, device: torch.device,
                   amp: bool, n_images: int, seed: int) -> None:
    """Replace the BN running statistics by exact averages over up to ``n_images`` training frames.

    From scratch, the running averages (momentum 0.03) lag the fast-changing weights so badly that
    the eval-mode model detects almost nothing while the train-mode one is near perfect (measured:
    AP50 0.006 -> 1.0 on the training frames after recalibration). Deterministic given ``seed``.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or n_images <= 0 or not len(data):
        return
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    perm = np.random.default_rng([seed, 11]).permutation(len(data))[:n_images]
    n = -(-len(perm) // batch_size) * batch_size  # full batches only (wrap around): BN needs > 1 value
    order = [int(perm[k % len(perm)]) for k in range(n)]
    model.train()
    try:
        for imgs, tg in _batches(data, batch_size, order):
            imgs = [i.to(device) for i in imgs]
            tg = [{k: v.to(device) for k, v in t.items()} for t in tg]
            with torch.autocast("cuda", enabled=amp):
                model(imgs, tg)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)


@torch.no_grad()
def val_loss(model: torch.nn.Module, data: DetectionData, batch_size: int, device: torch.device,
             amp: bool) -> float:
    """Mean training loss on held-out frames without touching the weights or the BN statistics
    (the model is in train mode so it returns losses, but its BN layers run in eval mode)."""
    was_training = model.training
    model.train()
    _bn_eval(model)
    total, n = 0.0, 0
    try:
        for imgs, tg in _batches(data, batch_size):
            imgs = [i.to(device) for i in imgs]
            tg = [{k: v.to(device) for k, v in t.items()} for t in tg]
            with torch.autocast("cuda", enabled=amp):
                losses = model(imgs, tg)
            total += float(sum(losses.values())) * len(imgs)
            n += len(imgs)
    finally:
        model.train(was_training)
    return total / max(1, n)


@torch.no_grad()
def detect(model: torch.nn.Module, data: DetectionData, batch_size: int, device: torch.device,
           amp: bool) -> pd.DataFrame:
    """Detections (score >= 0.001) for every frame of ``data``, in original pixels and clipped to the
    image (as :class:`~qualmet.detector.predictor.Predictor` does, so the logged val AP is what
    ``qualmet predict`` + ``qualmet evaluate`` give), as a frame."""
    was_training = model.training
    model.eval()
    rows = []
    try:
        for s in range(0, len(data), batch_size):
            idx = list(range(s, min(len(data), s + batch_size)))
            frames = [data.frame(i) for i in idx]
            with torch.autocast("cuda", enabled=amp):
                dets = model([to_tensor(f[0]).to(device) for f in frames])
            for i, (_, scale), d in zip(idx, frames, dets):
                b, keep = unletterbox(d["boxes"], scale, *data.sizes[i])
                scores, labels = d["scores"].float().cpu().numpy()[keep], d["labels"].cpu().numpy()[keep]
                for (x, y, w, h), sc, lab in zip(b[keep], scores, labels):
                    rows.append((data.image_ids[i], data.cat_ids[int(lab) - 1], x, y, w, h, float(sc)))
    finally:
        model.train(was_training)
    df = pd.DataFrame(rows, columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
    df.insert(0, "id", np.arange(1, len(df) + 1))
    return df


def plot_log(log: pd.DataFrame, path: str | os.PathLike) -> None:
    """Train vs val loss curves (left) and val AP / AP50 (right) against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(log["iter"], log["train_loss"], "o-", label="train")
    if log["val_loss"].notna().any():
        a.plot(log["iter"], log["val_loss"], "s-", label="val")
    a.set_xlabel("iteration")
    a.set_ylabel("loss")
    a.set_title("loss")
    a.legend()
    if log["val_AP"].notna().any():
        b.plot(log["iter"], log["val_AP"], "o-", label="val mAP")
        b.plot(log["iter"], log["val_AP50"], "s-", label="val AP50")
        b.set_ylim(0, 1)
        b.legend()
    else:
        b.text(0.5, 0.5, "no validation frames", ha="center", va="center")
    b.set_xlabel("iteration")
    b.set_title("validation AP")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict; a damaged file is a one-line error, never a traceback."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/UnpicklingError
        raise QualmetError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc}); "
                           "delete it to train from scratch") from None


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete temp files that a killed run left beside its outputs (``.model.pt.XXXX.tmp.pt`` ...).

    They are never read (a temp file only becomes an output by an atomic rename); removing them
    keeps the folder clean. Returns what was removed.
    """
    removed = []
    for name in (*OUTPUT_FILES, "checkpoint.pt", "config.json"):
        for f in out.glob(f".{name}.*.tmp{Path(name).suffix}"):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


_SAME_TRAINING = ("recipe", "seed", "val_fraction", "categories", "val_image_ids", "n_train_images",
                  "train_ids_sha256", "train_labels_sha256")


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings and training data in which an earlier training (a checkpoint's or a finished folder's
    config) differs from this one. Configs from before the labels hash lack it; the rest still counts."""
    return [k for k in _SAME_TRAINING
            if _normalised(k, old.get(k)) != new[k] and not (k == "train_labels_sha256" and k not in old)]


def _normalised(key: str, value: Any) -> Any:
    """A recorded recipe with the fields added since filled in with their defaults (a folder trained
    before ``threads`` existed is the same training as one with ``threads = 0``)."""
    if key != "recipe" or not isinstance(value, dict):
        return value
    try:
        return Recipe.from_dict(value).to_dict()
    except (QualmetError, TypeError):
        return value


def _finished_config(out: Path) -> dict[str, Any] | None:
    """A model folder's config.json as a dict, or None when it cannot be read as one."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def outputs_intact(out: Path) -> bool:
    """True when ``config.json`` exists and every output it lists has the recorded SHA-256."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
        listed = cfg["outputs"]
        return set(listed) == set(OUTPUT_FILES) and all(
            (out / n).is_file() and sha256_file(out / n) == listed[n]["sha256"] for n in OUTPUT_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_outputs(out: Path, model: torch.nn.Module, config: dict[str, Any], categories: list[dict],
                   log: pd.DataFrame) -> None:
    """model.pt, categories.json, train_log.csv, loss_curves.png, then config.json with their checksums."""
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(out / "categories.json", categories, indent=2)
    write_text(out / "train_log.csv", log.to_csv(index=False))
    plot_log(log, out / "loss_curves.png")
    outputs = {n: {"bytes": (out / n).stat().st_size, "sha256": sha256_file(out / n)} for n in OUTPUT_FILES}
    write_json(out / "config.json", {**config, "outputs": outputs}, indent=2)


def _checked_recipe(recipe: str | Recipe, overrides: dict[str, Any]) -> Recipe:
    """The recipe with ``overrides`` applied (None values ignored), refused when a field is out of range."""
    rec = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    rec = rec.replace(**{k: v for k, v in overrides.items() if v is not None})
    for name in ("iters", "checkpoint_every", "eval_every", "batch_size"):
        if getattr(rec, name) < 1:
            raise QualmetError(f"{name} must be at least 1, got {getattr(rec, name)}")
    if rec.input_size < 32:
        raise QualmetError(f"input_size must be at least 32 px, got {rec.input_size}")
    if not rec.lr > 0:
        raise QualmetError(f"lr must be positive, got {rec.lr}")
    if rec.arch == "ssdlite" and rec.input_size >= 256 and rec.iters < MIN_USEFUL_ITERS:
        warnings.warn(f"{rec.iters} iterations: the from-scratch {rec.name} recipe detects nothing before "
                      f"~{MIN_USEFUL_ITERS} iterations", stacklevel=3)
    return rec


def _validate(model: torch.nn.Module, rec: Recipe, train_data: DetectionData, val_ds: Dataset,
              val_data: DetectionData, dev: torch.device, use_amp: bool, seed: int) -> dict[str, float]:
    """Validation loss, AP and AP50 of a copy of ``model`` whose batch-norm statistics are recalibrated
    on the training frames (the training model itself is left as it is)."""
    ev_model = copy.deepcopy(model)
    recalibrate_bn(ev_model, train_data, rec.batch_size, dev, use_amp, rec.bn_recalib_images, seed)
    loss = val_loss(ev_model, val_data, rec.batch_size, dev, use_amp)
    stats, _, _ = coco_eval(val_ds, detect(ev_model, val_data, 16, dev, use_amp))
    return {"val_loss": loss, **{f"val_{k}": np.nan if stats[k] is None else stats[k] for k in ("AP", "AP50")}}


def train(dataset: str | os.PathLike | Dataset, out_dir: str | os.PathLike, val_fraction: float = 0.2,
          iters: int | None = None, seed: int = 0, device: str = "auto", recipe: str | Recipe = "ssdlite256",
          images: str | os.PathLike | None = None, val_dataset: Dataset | None = None, progress: bool = True,
          callback: Callable[[int, dict[str, Any]], None] | None = None, **overrides: Any) -> TrainResult:
    """Train the fixed detector on ``dataset`` into ``out_dir``; see :func:`_train`. Runs with the
    recipe's torch thread count (``threads``, 0 = torch's own), restored afterwards."""
    threads = overrides.get("threads")
    if threads is None:
        threads = recipe.threads if isinstance(recipe, Recipe) else get_recipe(recipe).threads
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise QualmetError(f"threads must be a whole number, at least 0 (0: torch's default), got {threads!r}")
    with torch_threads(threads):
        return _train(dataset, out_dir, val_fraction, iters, seed, device, recipe, images, val_dataset, progress,
                      callback, **overrides)


def _train(dataset: str | os.PathLike | Dataset, out_dir: str | os.PathLike, val_fraction: float = 0.2,
           iters: int | None = None, seed: int = 0, device: str = "auto", recipe: str | Recipe = "ssdlite256",
           images: str | os.PathLike | None = None, val_dataset: Dataset | None = None, progress: bool = True,
           callback: Callable[[int, dict[str, Any]], None] | None = None, **overrides: Any) -> TrainResult:
    """Train the fixed detector on ``dataset`` into ``out_dir`` (model.pt, categories.json,
    train_log.csv, loss_curves.png, checkpoint.pt, and last config.json with their SHA-256).

    ``val_fraction`` of the frames (seeded, by image) are held out for the val loss / mAP log,
    unless ``val_dataset`` is given. Rerunning with the same arguments resumes from the last
    checkpoint. ``overrides`` change recipe fields (e.g. ``input_size=128``); ``callback(it, info)``
    runs after every iteration.
    """
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):  # NaN fails too
        raise QualmetError(f"val_fraction must be at least 0 and below 1, got {val_fraction}")
    ds = _load_dataset(dataset, images)
    rec = _checked_recipe(recipe, {"iters": iters, **overrides})
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
              "train_ids_sha256": hashlib.sha256(",".join(map(str, sorted(int(i) for i in train_ds.images["id"])))
                                                 .encode()).hexdigest(),
              "train_labels_sha256": labels_sha256(train_ds),
              "val_image_ids": [int(i) for i in val_ds.images["id"]] if val_ds is not None else [],
              "qualmet_version": __version__, "environment": versions()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    remove_stale_temps(out)
    dev = pick_device(device)
    use_amp = dev.type == "cuda" and rec.amp

    _seed_all(seed)
    model = build_model(rec, len(categories)).to(dev)
    opt = torch.optim.AdamW(param_groups(model, rec.weight_decay), lr=rec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, rec))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, log_rows, window, elapsed0 = 0, [], [0.0, 0], 0.0
    if not ckpt_path.is_file() and (out / "config.json").exists():
        # a finished folder whose checkpoint was deleted (to save space): the same training is done, another refused
        finished = _finished_config(out)
        diff = ["config.json (unreadable)"] if finished is None else _differences(finished, config)
        if diff:
            raise QualmetError(f"{out}: holds a model of a different training ({', '.join(diff)} differ) and no "
                               "checkpoint.pt; use another --out folder or delete it")
        if outputs_intact(out):
            if progress:
                print(f"{out}: already trained ({rec.iters} iterations); nothing to do", flush=True)
            return TrainResult(out, Predictor.load(out, device), pd.read_csv(out / "train_log.csv"), rec.iters)
        # outputs damaged and nothing to resume from: the same seeded training again (same weights on CPU)
    if ckpt_path.is_file():
        ck = _load_checkpoint(ckpt_path)
        diff = _differences(ck["config"], config)
        if diff:
            raise QualmetError(f"{out}: holds a checkpoint of a different training ({', '.join(diff)} differ); "
                               "use another --out folder or delete it")
        changed = differences(ck["config"].get("environment"), config["environment"])
        if changed:
            warnings.warn(f"{out}: resuming a checkpoint made with other library versions ({describe(changed)}); "
                          "the result may differ from an uninterrupted run", stacklevel=2)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        start, log_rows, window, elapsed0 = ck["iter"], ck["log"], ck["window"], ck["elapsed_s"]
        if progress:
            print(f"{out}: already trained ({rec.iters} iterations); nothing to do" if start >= rec.iters
                  else f"resuming {out} from iteration {start}/{rec.iters}", flush=True)

    train_data = DetectionData(train_ds, rec.input_size)
    val_data = DetectionData(val_ds, rec.input_size) if val_ds is not None and len(val_ds.images) else None
    sampler = IterationSampler(len(train_data), rec.batch_size, seed, start, rec.iters, rec.hflip)
    loader = torch.utils.data.DataLoader(train_data, batch_sampler=sampler, collate_fn=collate, num_workers=0)

    from tqdm.auto import tqdm

    bar = tqdm(total=rec.iters, initial=start, desc="train", unit="it", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    it = start
    model.train()
    try:
        for imgs, tg in loader:
            imgs = [i.to(dev, non_blocking=True) for i in imgs]
            tg = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in tg]
            with torch.autocast("cuda", enabled=use_amp):
                losses = model(imgs, tg)
                loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise QualmetError(f"training diverged at iteration {it + 1}: loss is {float(loss)} "
                                   f"({ {k: float(v) for k, v in losses.items()} })")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), rec.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            it += 1
            window[0] += loss.item()
            window[1] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if it % rec.eval_every == 0 or it == rec.iters:
                row = {"iter": it, "lr": opt.param_groups[0]["lr"], "train_loss": window[0] / max(1, window[1]),
                       "val_loss": np.nan, "val_AP": np.nan, "val_AP50": np.nan,
                       "elapsed_s": elapsed0 + time.perf_counter() - t0}
                if val_data is not None:
                    row.update(_validate(model, rec, train_data, val_ds, val_data, dev, use_amp, seed))
                log_rows.append(row)
                window = [0.0, 0]
                log = pd.DataFrame(log_rows, columns=LOG_COLUMNS)
                write_text(out / "train_log.csv", log.to_csv(index=False))
                plot_log(log, out / "loss_curves.png")
                if progress:
                    bar.write(f"iter {it}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                              f"val mAP {row['val_AP']:.3f}  AP50 {row['val_AP50']:.3f}")
            if it % rec.checkpoint_every == 0 or it == rec.iters:
                _save_checkpoint(ckpt_path, {
                    "iter": it, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                    "log": log_rows, "window": window, "elapsed_s": elapsed0 + time.perf_counter() - t0,
                    "config": config})
            if callback is not None:
                callback(it, {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}})
    finally:
        bar.close()

    log = pd.DataFrame(log_rows, columns=LOG_COLUMNS)
    recalibrate_bn(model, train_data, rec.batch_size, dev, use_amp, rec.bn_recalib_images, seed)
    if start < rec.iters or not outputs_intact(out):  # also repairs a folder killed while writing them
        _write_outputs(out, model, config, categories, log)
    return TrainResult(out, Predictor(model, rec, categories, dev), log, start)
