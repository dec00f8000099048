"""Asymmetric Angular Margin loss (Prokofiev & Sovrasov, arXiv 2209.06585;
docs/method.md#aam-asymmetric-angular-margin)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from .base import Reduction, prepare, reduce


class AsymmetricAngularLoss(nn.Module):
    """AAM on cosines `(B, C)` in [-1, 1]; targets `(B, C)` in {0, 1}, < 0 ignored.

        p_pos  = σ( s (cos − m))                 p_neg = σ(−s (cos + m))
        focusing (γ+ > 0 or γ− > 0):
            p_neg' = min(p_neg + clip, 1)
            w      = y p_neg'^γ+ + (1 − y) p_pos^γ−       (no gradient, as ASL)
        otherwise p_neg' = p_neg, w = 1
        L = −Σ w [ (k/s) y log p_pos + ((1 − k)/s) (1 − y) log p_neg' ]

    Always computed in fp32 with logsigmoid (fp16 and log(sigmoid(.)) gave inf/NaN at s≈20-30
    in the reference). The 1/s factor keeps the gradient size independent of s. At inference
    the label probability is σ(s·cos): see `models.classifier.MultilabelClassifier.scores`.
    """

    uses_cosine = True

    def __init__(
        self,
        s: float = 23.0,
        m: float = 0.0,
        k: float = 0.7,
        gamma_pos: float = 0.0,
        gamma_neg: float = 0.0,
        clip: float = 0.05,
        label_smoothing: float = 0.0,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__()
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {k}")
        self.s = s
        self.m = m
        self.k = k
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.label_smoothing = label_smoothing
        self.reduction: Reduction = reduction

    def forward(self, cosines: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos, y, valid = prepare(cosines, targets, self.label_smoothing)
        log_p_pos = nnf.logsigmoid(self.s * (cos - self.m))  # (B, C)
        log_p_neg = nnf.logsigmoid(-self.s * (cos + self.m))
        focusing = self.gamma_pos > 0 or self.gamma_neg > 0
        if focusing and self.clip > 0:
            p_neg_shift = (log_p_neg.exp() + self.clip).clamp(max=1.0)
            log_p_neg = torch.log(p_neg_shift)  # p_neg' >= clip > 0: finite
        loss = (self.k / self.s) * y * log_p_pos + ((1.0 - self.k) / self.s) * (1.0 - y) * log_p_neg
        if focusing:
            with torch.no_grad():
                w = y * log_p_neg.exp().pow(self.gamma_pos) + (1.0 - y) * log_p_pos.exp().pow(
                    self.gamma_neg
                )
            loss = loss * w
        return reduce(-loss, valid, self.reduction)
