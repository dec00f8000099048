"""Heads, registered by name. Each takes the feature map (B, D, H, W) and returns (B, C):
cosines when `cosine=True` (AAM), logits otherwise (BCE/ASL).

A registry entry is a builder `(in_features, num_classes, cosine, context, **params) -> head`;
`context` carries what some heads derive from the data (the GCN's co-occurrence graph) or, when
rebuilding a trained model, from its saved state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ...registry import Registry
from .common import CosineLinear
from .gcn import (
    GCNHead,
    cooccurrence_adjacency,
    load_label_embeddings,
    one_hot_embeddings,
)
from .linear import LinearHead
from .ml_decoder import MLDecoderHead


@dataclass
class HeadContext:
    labels: Sequence[str]
    train_targets: np.ndarray | None = None  # (N, C) in {1, 0, -1}
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)  # head.* of a checkpoint


HeadBuilder = Callable[..., nn.Module]
HEADS: Registry[HeadBuilder] = Registry("head")


@HEADS.register("linear")
def _linear(
    in_features: int,
    num_classes: int,
    cosine: bool,
    context: HeadContext,
    drop_rate: float = 0.0,
) -> nn.Module:
    return LinearHead(in_features, num_classes, cosine=cosine, drop_rate=drop_rate)


@HEADS.register("ml_decoder")
def _ml_decoder(
    in_features: int,
    num_classes: int,
    cosine: bool,
    context: HeadContext,
    num_queries: int = 100,
    embed_dim: int = 768,
    num_heads: int = 8,
    ff_dim: int = 2048,
    dropout: float = 0.1,
) -> nn.Module:
    return MLDecoderHead(
        in_features, num_classes, cosine, num_queries, embed_dim, num_heads, ff_dim, dropout
    )


@HEADS.register("gcn")
def _gcn(
    in_features: int,
    num_classes: int,
    cosine: bool,
    context: HeadContext,
    embeddings: str | None = None,
    tau: float = 0.4,
    rho: float = 0.25,
    hidden_dim: int | None = None,
) -> nn.Module:
    if "embeddings" in context.state and "adjacency" in context.state:
        # Rebuilding a trained model: the graph comes from its saved buffers.
        emb = context.state["embeddings"]
        adj = context.state["adjacency"]
    else:
        if context.train_targets is None:
            raise ValueError("the gcn head needs the training targets to build its adjacency")
        adj = torch.from_numpy(cooccurrence_adjacency(context.train_targets, tau, rho))
        arr = (
            load_label_embeddings(embeddings, context.labels)
            if embeddings
            else one_hot_embeddings(num_classes)
        )
        emb = torch.from_numpy(arr)
    return GCNHead(in_features, num_classes, emb, adj, cosine=cosine, hidden_dim=hidden_dim)


def build_head(
    name: str,
    in_features: int,
    num_classes: int,
    cosine: bool,
    context: HeadContext,
    **params: Any,
) -> nn.Module:
    return HEADS.get(name)(in_features, num_classes, cosine, context, **params)


__all__ = [
    "HEADS",
    "CosineLinear",
    "GCNHead",
    "HeadContext",
    "LinearHead",
    "MLDecoderHead",
    "build_head",
    "cooccurrence_adjacency",
    "load_label_embeddings",
    "one_hot_embeddings",
]
