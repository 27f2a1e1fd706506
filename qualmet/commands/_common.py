"""Argument helpers every command shares, so the CLI conventions stay the same everywhere."""
from __future__ import annotations

import argparse


def add_dataset_args(p: argparse.ArgumentParser, name: str = "dataset") -> None:
    """A COCO JSON data set argument plus ``--images`` (default: images/ beside the JSON)."""
    p.add_argument(name, help="COCO JSON data set")
    p.add_argument("--images", default=None, help="image root (default: an images/ folder beside the JSON, else its folder)")


def add_seed(p: argparse.ArgumentParser, default: int = 0) -> None:
    p.add_argument("--seed", type=int, default=default, help=f"random seed (default {default})")
