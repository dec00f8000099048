"""The multilabel classifier = backbone + head, and its probability view for export."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..losses import loss_uses_cosine
from .backbone import Backbone
from .heads import HeadContext, build_head


class MultilabelClassifier(nn.Module):
    """`forward` returns the head's raw output (B, C): cosines for cosine heads, else logits.

    `scores` returns probabilities: σ(s·cos) for cosine heads (s = the AAM scale, a buffer so it
    travels with the weights), σ(logit) otherwise.
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, cosine: bool, score_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.cosine = cosine
        self.register_buffer("score_scale", torch.tensor(float(score_scale) if cosine else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (B, C)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        scale: torch.Tensor = self.score_scale  # type: ignore[assignment]
        return torch.sigmoid(outputs.float() * scale)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(self(x))

    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (B, C) and each label's raw evidence over the feature map
        (B, C, H, W): the head's `explain` (docs/method.md#where-a-tag-comes-from)."""
        features = self.backbone(x)  # (B, D, H, W)
        head: Any = self.head
        return self.probabilities(head(features)), head.explain(features)


class ProbabilityModel(nn.Module):
    """Image batch -> per-label probabilities: the graph an exporter should trace."""

    def __init__(self, classifier: MultilabelClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.scores(x)


def head_params(cfg: Config) -> dict[str, Any]:
    section = getattr(cfg.head, cfg.model.head, None)
    params: dict[str, Any] = section.model_dump() if section is not None else {}
    if cfg.model.head == "linear":
        params.pop("cosine", None)
        params["drop_rate"] = cfg.model.drop_rate
    return params


def is_cosine(cfg: Config) -> bool:
    if cfg.model.head == "linear" and cfg.head.linear.cosine != "auto":
        return bool(cfg.head.linear.cosine)
    return loss_uses_cosine(cfg.loss.name)


def build_model(
    cfg: Config,
    labels: Sequence[str],
    train_targets: np.ndarray | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    pretrained: bool | str | None = None,
) -> MultilabelClassifier:
    """Build the classifier a config describes.

    For training pass the training targets (the GCN graph is built from them). To rebuild a
    trained model pass its state dict: graph buffers are taken from it and no pretrained
    weights are fetched; load the state dict afterwards.
    """
    if pretrained is None:
        pretrained = False if state is not None else cfg.model.pretrained
    backbone = Backbone(cfg.model.backbone, pretrained=pretrained)
    head_state = {k[len("head.") :]: v for k, v in (state or {}).items() if k.startswith("head.")}
    context = HeadContext(labels=list(labels), train_targets=train_targets, state=head_state)
    cosine = is_cosine(cfg)
    head = build_head(
        cfg.model.head, backbone.num_features, len(labels), cosine, context, **head_params(cfg)
    )
    scale = cfg.loss.aam.s if cosine else 1.0
    return MultilabelClassifier(backbone, head, cosine=cosine, score_scale=scale)
