"""Shared pieces of the multilabel losses: target masking, smoothing, reduction."""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["sum", "mean"]


def prepare(
    scores: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return fp32 scores, (smoothed) targets in [0, 1] and the mask of labels to count.

    A target < 0 means "ignore this label": it contributes neither loss nor gradient.
    Smoothing moves targets towards 0.5: y <- y(1 - eps) + eps/2.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ")
    x = scores.float()
    t = targets.float()
    valid = (t >= 0).float()
    y = t.clamp(min=0.0)
    if label_smoothing > 0:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return x, y * valid, valid


def reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """`sum` over batch and classes (the reference), or `mean` over the counted labels."""
    loss = loss * valid
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp(min=1.0)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
