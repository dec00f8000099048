"""Training curves and precision-recall curves as PNG (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [h["lr"] for h in history], marker="o")
    axes[1].set_title("learning rate (end of epoch)")
    if len({h["lr"] for h in history}) > 1:
        axes[1].set_yscale("log")
    axes[2].plot(epochs, [h["val_mAP"] for h in history], marker="o", label="raw")
    if any(h.get("val_mAP_ema") is not None for h in history):
        axes[2].plot(epochs, [h.get("val_mAP_ema") for h in history], marker="s", label="EMA")
    axes[2].set_title("validation mAP (%)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pr(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = targets >= 0
    s, y = scores[keep], (targets[keep] > 0).astype(np.float64)
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / max(y.sum(), 1)
    return recall, precision


def plot_pr_curves(
    scores: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    path: Path,
    title: str = "validation",
    max_classes: int = 20,
) -> None:
    """One PR curve per class (the `max_classes` most frequent), AP in the legend."""
    from .metrics import average_precision

    plt = _plt()
    freq = (targets > 0).sum(axis=0)
    chosen = [int(c) for c in np.argsort(-freq, kind="mergesort")[:max_classes] if freq[c] > 0]
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in chosen:
        r, p = _pr(scores[:, c], targets[:, c])
        ap = average_precision(scores[:, c], targets[:, c]) * 100
        ax.plot(r, p, label=f"{labels[c]} ({ap:.1f})", linewidth=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"precision-recall, {title} (AP %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
