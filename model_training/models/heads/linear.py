"""`linear`: global average pooling, then a cosine (AAM) or plain (BCE/ASL) linear layer.
`explain` is its class activation map (exact: see `class_activation_map`)."""

from __future__ import annotations

import torch
from torch import nn

from .common import class_activation_map, make_classifier


class LinearHead(nn.Module):
    explain_method = "cam"

    def __init__(
        self, in_features: int, num_classes: int, cosine: bool = False, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.cosine = cosine
        self.drop = nn.Dropout(drop_rate)
        self.fc = make_classifier(in_features, num_classes, cosine)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))  # (B, D)
        return self.fc(self.drop(pooled))  # (B, C)

    def explain(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, C, H, W): each label's evidence at each position."""
        return class_activation_map(self.fc, features)
