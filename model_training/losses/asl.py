"""Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from .base import Reduction, prepare, reduce


class AsymmetricLoss(nn.Module):
    """ASL on logits `(B, C)`; targets `(B, C)` in {0, 1}, < 0 ignored.

        p = σ(z), p_m = max(p − clip, 0)
        L = −y (1 − p)^γ+ log p − (1 − y) p_m^γ− log(1 − p_m)

    Computed in fp32; log p uses logsigmoid. As in the reference, the focusing weights carry
    no gradient. With γ± = 0 and clip = 0 this is exactly BCE.
    """

    uses_cosine = False

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        label_smoothing: float = 0.0,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__()
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.label_smoothing = label_smoothing
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x, y, valid = prepare(logits, targets, self.label_smoothing)
        log_p = nnf.logsigmoid(x)  # (B, C)
        p = torch.sigmoid(x)
        if self.clip > 0:
            p_m = (p - self.clip).clamp(min=0.0)
            log_1m_pm = torch.log((1.0 - p_m).clamp(min=1e-12))  # 1 - p_m >= clip, safe
        else:
            p_m = p
            log_1m_pm = nnf.logsigmoid(-x)
        pos = y * log_p
        neg = (1.0 - y) * log_1m_pm
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            with torch.no_grad():
                w_pos = (1.0 - p).pow(self.gamma_pos)
                w_neg = p_m.pow(self.gamma_neg)
            pos = pos * w_pos
            neg = neg * w_neg
        return reduce(-(pos + neg), valid, self.reduction)
