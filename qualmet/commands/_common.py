"""Argument helpers every command shares, so the CLI conventions stay the same everywhere."""
from __future__ import annotations

import argparse

IMAGES_HELP = "image root (default: the folder a NAME.images sidecar beside the JSON names, else images/ beside the JSON, else its folder)"


def add_dataset_args(p: argparse.ArgumentParser, name: str = "dataset", images_help: str = "") -> None:
    """A COCO JSON data set argument plus ``--images`` (default: the JSON's sidecar, else images/ beside it)."""
    p.add_argument(name, help="COCO JSON data set")
    p.add_argument("--images", default=None, help=images_help or IMAGES_HELP)


def seed_value(text: str) -> int:
    """A --seed: numpy's generators take whole numbers from 0 up."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v}: a seed must not be negative")
    return v


def add_seed(p: argparse.ArgumentParser, default: int = 0) -> None:
    p.add_argument("--seed", type=seed_value, default=default, help=f"random seed (default {default})")
