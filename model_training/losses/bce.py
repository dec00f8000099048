"""Binary cross-entropy on logits: the baseline."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from .base import Reduction, prepare, reduce


class BinaryCrossEntropyLoss(nn.Module):
    """BCE on logits `(B, C)` with targets `(B, C)` in {0, 1}; targets < 0 are ignored."""

    uses_cosine = False

    def __init__(self, label_smoothing: float = 0.0, reduction: Reduction = "sum") -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x, y, valid = prepare(logits, targets, self.label_smoothing)
        loss = nnf.binary_cross_entropy_with_logits(x, y, reduction="none")  # (B, C)
        return reduce(loss, valid, self.reduction)
