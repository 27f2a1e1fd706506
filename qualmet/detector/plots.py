"""The training's loss curves as a PNG. Imports matplotlib only, never torch, so a report can draw
them for an older model folder without loading the detector."""
from __future__ import annotations

import os

import pandas as pd

from ..atomic import atomic_path


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
