"""Pieces shared by the heads."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as nnf


class CosineLinear(nn.Module):
    """Cosine ("angle") linear: `normalize(x) @ normalize(W)ᵀ`, no bias, clamped to [-1, 1]."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.uniform_(self.weight, -1.0 / math.sqrt(in_features), 1.0 / math.sqrt(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos = nnf.normalize(x, dim=-1) @ nnf.normalize(self.weight, dim=-1).t()  # (B, C)
        return cos.clamp(-1.0, 1.0)


def make_classifier(in_features: int, num_classes: int, cosine: bool) -> nn.Module:
    return CosineLinear(in_features, num_classes) if cosine else nn.Linear(in_features, num_classes)
