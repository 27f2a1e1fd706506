"""Every picture qualmet draws, in one place: each function takes plain data (arrays, DataFrames)
and writes a PNG (atomically) or returns its bytes. matplotlib is imported on first use, with the
Agg backend, so nothing here needs a display and importing this module stays cheap."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .metric_run import fences

CLEAN_C, INJ_C, FENCE_C, SIDE_C = "#5b7fa6", "#e4572e", "#333333", "#fde2dc"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    pyplot().close(fig)
    return buf.getvalue()


def save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write the figure to ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig)
    pyplot().close(fig)
    return Path(path)


def histogram_png(values: np.ndarray, worse: str, injected: np.ndarray | None = None, bins: int = 40,
                  labels: tuple[str, str] = ("clean", "injected error")) -> bytes:
    """PNG bytes of the histogram of ``values`` (NaN dropped); ``injected`` (bool per value) stacks the
    injected-error items on top of the clean ones."""
    plt = pyplot()
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    fig, ax = plt.subplots(figsize=(6.4, 2.7), dpi=100)
    if not ok.any():
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes, color="#666")
        ax.set_yticks([])
    else:
        lo, hi = float(v[ok].min()), float(v[ok].max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        f = fences(v)
        if f is not None:  # shade the side 'worse' names, beyond its fence
            if worse == "high" and f[1] < hi:
                ax.axvspan(f[1], hi, color=SIDE_C, zorder=0, lw=0)
            elif worse == "low" and f[0] > lo:
                ax.axvspan(lo, f[0], color=SIDE_C, zorder=0, lw=0)
        if injected is not None:
            inj = np.asarray(injected, bool)
            ax.hist([v[ok & ~inj], v[ok & inj]], bins=edges, stacked=True, color=[CLEAN_C, INJ_C],
                    label=[f"{labels[0]} ({int((ok & ~inj).sum())})", f"{labels[1]} ({int((ok & inj).sum())})"],
                    edgecolor="white", linewidth=0.4, zorder=2)
        else:
            ax.hist(v[ok], bins=edges, color=CLEAN_C, edgecolor="white", linewidth=0.4, zorder=2,
                    label=f"all ({int(ok.sum())})")
        if f is not None:
            for x, name in ((f[0], "Q1 − 1.5 IQR"), (f[1], "Q3 + 1.5 IQR")):
                if lo <= x <= hi:
                    ax.axvline(x, color=FENCE_C, ls="--", lw=1, zorder=3)
                    right = x < (lo + hi) / 2  # label on the side with more room
                    ax.annotate(name, (x, 1), xycoords=("data", "axes fraction"), xytext=(3 if right else -3, -10),
                                textcoords="offset points", fontsize=7, color=FENCE_C,
                                ha="left" if right else "right")
        ax.legend(fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2,
                  borderaxespad=0.2, handlelength=1.2)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#e5e7eb", lw=0.6, zorder=0)
    fig.tight_layout(pad=0.4)
    return png_bytes(fig)


def auroc_heatmap(piv: pd.DataFrame, path: str | Path) -> Path:
    """Metric x injected-error-type AUROC table as a heat map (0.3 red ... 1.0 green)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(piv.columns) + 3, 0.35 * len(piv) + 1.5))
    im = ax.imshow(piv.to_numpy(dtype=float), cmap="RdYlGn", vmin=0.3, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(piv.columns)), piv.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(piv.index)), piv.index)
    for (i, j), v in np.ndenumerate(piv.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="AUROC")
    ax.set_title("Which metric finds which injected error")
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def confusion_png(cm: pd.DataFrame, path: str | Path) -> Path:
    """Confusion matrix heat map with counts."""
    plt = pyplot()
    n = len(cm)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(cm.to_numpy(), cmap="Blues")
    ax.set_xticks(range(n), cm.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), cm.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    vmax = cm.to_numpy().max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            v = int(cm.iat[i, j])
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > vmax / 2 else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def pr_curves_png(ev: Any, names: dict[int, str], path: str | Path) -> Path:
    """Precision-recall curves of a pycocotools/faster-coco-eval ``COCOeval`` after ``accumulate()``
    (None: nothing to evaluate): all classes at IoU 0.5 and 0.75, and each class at IoU 0.5."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if ev is None:
        ax.text(0.5, 0.5, "nothing to evaluate\n(no predictions or no ground-truth box)", ha="center", va="center")
    else:
        rec = ev.params.recThrs
        prec = ev.eval["precision"]
        for t_idx, style in ((0, "-"), (5, "--")):
            p = prec[t_idx, :, :, 0, -1]
            p = np.where(p > -1, p, np.nan)
            if np.isfinite(p).any():
                ax.plot(rec, np.nanmean(p, axis=1), style, color="black", lw=2,
                        label=f"all, IoU {ev.params.iouThrs[t_idx]:.2f}")
        if len(ev.params.catIds) > 1:
            for k, c in enumerate(ev.params.catIds):
                p = prec[0, :, k, 0, -1]
                if (p > -1).any():
                    ax.plot(rec, np.where(p > -1, p, np.nan), lw=1, label=f"{names.get(c, c)} @0.5")
        if ax.lines:
            ax.legend(fontsize=8)
        else:  # COCO could compute no curve: the ground truth has no (non-crowd) box
            ax.text(0.5, 0.5, "nothing to evaluate\n(no ground-truth box)", ha="center", va="center")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def loss_curves_png(log: pd.DataFrame, path: str | Path) -> Path:
    """A training's log: train vs val loss (left) and val AP / AP50 (right) against iterations."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(log["iter"], log["train_loss"], "o-", label="train")
    if log["val_loss"].notna().any():
        a.plot(log["iter"], log["val_loss"], "s-", label="val")
    a.set(xlabel="iteration", ylabel="loss", title="loss")
    a.legend()
    if log["val_AP"].notna().any():
        b.plot(log["iter"], log["val_AP"], "o-", label="val mAP")
        b.plot(log["iter"], log["val_AP50"], "s-", label="val AP50")
        b.set_ylim(0, 1)
        b.legend()
    else:
        b.text(0.5, 0.5, "no validation frames", ha="center", va="center")
    b.set(xlabel="iteration", title="validation AP")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


VERDICT_C = {"better": "#2e8b57", "worse": "#c0392b", "no effect": "#888888", "no difference shown": "#2a7ab9"}


def forest_png(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Forest plot of an experiment's contrasts (:func:`qualmet.contrasts.contrast_table`): per contrast
    the mean paired difference in points with its 95% CI, AP and AR@100 side by side, coloured by
    verdict; the dashed line is no difference, the grey band the no-effect zone."""
    from .contrasts import NO_EFFECT, STATS

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.45 * max(len(table), 1)), sharey=True)
    y = np.arange(len(table))[::-1]
    for ax, stat, label in zip(axes, STATS, ("ΔAP (points)", "ΔAR@100 (points)")):
        ax.axvspan(-NO_EFFECT, NO_EFFECT, color="#dddddd", zorder=0)
        ax.axvline(0, color="#444444", ls="--", lw=1)
        for yi, r in zip(y, table.to_dict("records")):
            d, lo, hi = r[f"{stat}_diff"], r[f"{stat}_lo"], r[f"{stat}_hi"]
            colour = VERDICT_C.get(r[f"{stat}_verdict"], "black")
            if np.isfinite(lo):
                ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
            if np.isfinite(d):
                ax.plot([d], [yi], "o", color=colour)
        ax.set_xlabel(label + ", 95% CI")
        ax.set_title(label.split(" ")[0] + " (paired over seeds)")
    axes[0].set_yticks(y, list(table["contrast"]) if len(table) else [], fontsize=8)
    if not len(table):
        axes[0].text(0.5, 0.5, "no contrast has results yet", transform=axes[0].transAxes, ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def importance_png(table: pd.DataFrame, path: str | Path) -> Path:
    """Bars of each metric's mutual information with "the model found this object"."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1.5))
    ax.barh(table["metric"][::-1], table["mutual_info_bits"][::-1], color="#2a7ab9")
    ax.set_xlabel("mutual information with 'the model found this object' (bits)")
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def model_diagram_png(items: list[tuple[str, str, str]], title: str, path: str | Path) -> Path:
    """Boxes and arrows, top to bottom: one box per ``(name, kind, output shape)``; backbone blocks
    blue, head blocks orange, the rest grey."""
    plt = pyplot()
    n = len(items)
    fig, ax = plt.subplots(figsize=(7.5, 0.62 * n + 0.8))
    ax.set_xlim(0, 10)
    ax.set_ylim(-n, 0.8)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    for k, (name, kind, shape) in enumerate(items):
        y = -k
        color = "#dbe9f6" if name.startswith("backbone") else "#fde2c8" if name.startswith("head") else "#e6e6e6"
        ax.add_patch(plt.Rectangle((0.3, y - 0.25), 9.4, 0.5, facecolor=color, edgecolor="black", lw=0.8))
        ax.text(0.45, y, name, va="center", fontsize=8, weight="bold")
        ax.text(3.6, y, kind, va="center", fontsize=7)
        ax.text(9.6, y, (shape[:48] + "...") if len(shape) > 48 else shape, va="center", ha="right", fontsize=7)
        if k < n - 1:
            ax.annotate("", xy=(5, y - 0.75), xytext=(5, y - 0.25), arrowprops={"arrowstyle": "->", "lw": 0.8})
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
