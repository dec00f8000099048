"""Multilabel losses, registered by name: `bce`, `asl`, `aam`.

Every loss is `(logits_or_cosines (B, C), targets (B, C)) -> scalar`, ignores targets < 0,
takes `reduction` = sum | mean, and keeps no state between calls.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .aam import AsymmetricAngularLoss
from .asl import AsymmetricLoss
from .bce import BinaryCrossEntropyLoss

LOSSES: Registry[type[nn.Module]] = Registry("loss")
LOSSES.add("bce", BinaryCrossEntropyLoss)
LOSSES.add("asl", AsymmetricLoss)
LOSSES.add("aam", AsymmetricAngularLoss)


def build_loss(name: str, reduction: str = "sum", **params: Any) -> nn.Module:
    """`build_loss("aam", s=23, k=0.7)`; unknown names list the registered ones."""
    cls = LOSSES.get(name)
    return cls(reduction=reduction, **params)


def loss_uses_cosine(name: str) -> bool:
    return bool(getattr(LOSSES.get(name), "uses_cosine", False))


__all__ = [
    "LOSSES",
    "AsymmetricAngularLoss",
    "AsymmetricLoss",
    "BinaryCrossEntropyLoss",
    "build_loss",
    "loss_uses_cosine",
]
