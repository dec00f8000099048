"""`gcn`: the paper's graph branch over label co-occurrence (docs/method.md#gcn-branch).

Label embeddings E (C, d) and the normalised adjacency Â (C, C) are buffers, so the model keeps
one input and the graph travels with the weights. Two graph convolutions (d -> H -> D, LeakyReLU
after both) give G (C, D); the channel attention a = σ(max_c G[c, :]) (D,) does not depend on
the image, so at inference the head is GAP(a ⊙ F) followed by a (cosine) linear layer. `a` is
computed from the current weights on every call: an exporter that traces the model after
loading the checkpoint bakes the trained value in (the reference computed it before loading).

Adjacency (ML-GCN style, from the training labels): M_ij = n(i∧j)/n(i) with the diagonal
excluded, A = [M ≥ τ], A <- A·ρ/(colsum(A) + 1e-6) + I, Â = D^-1/2 Aᵀ D^-1/2 with D = rowsum(A).

Label embeddings: a user file (`.npy` of shape (C, d) in label order, or JSON
`{word_or_label: [floats]}`; a multi-word label missing from the JSON is the mean of its
words' vectors, as the paper did with GloVe), else the built-in fallback: one-hot (d = C),
which makes the first layer a learned per-label vector while the graph still mixes labels by
co-occurrence.

`explain`: the class activation map of GAP(a ⊙ F) (docs/method.md#where-a-tag-comes-from).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import class_activation_map, make_classifier


def cooccurrence_adjacency(targets: np.ndarray, tau: float = 0.4, rho: float = 0.25) -> np.ndarray:
    """Normalised adjacency Â (C, C) from training targets (N, C); entries < 1 count as absent."""
    y = (np.asarray(targets) > 0).astype(np.float64)  # ignore (-1) and 0 -> absent
    n = y.sum(axis=0)  # (C,)
    co = y.T @ y  # (C, C): n(i ∧ j)
    np.fill_diagonal(co, 0.0)
    m = np.divide(co, n[:, None], out=np.zeros_like(co), where=n[:, None] > 0)
    a = (m >= tau).astype(np.float64)
    a = a * rho / (a.sum(axis=0, keepdims=True) + 1e-6) + np.eye(len(n))
    d = np.power(a.sum(axis=1), -0.5)
    return (d[:, None] * a.T * d[None, :]).astype(np.float32)


def one_hot_embeddings(num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)


def load_label_embeddings(path: str | Path, labels: Sequence[str]) -> np.ndarray:
    """Read (C, d) label embeddings from `.npy` (label order) or JSON `{name: vector}`."""
    p = Path(path)
    if p.suffix == ".npy":
        arr = np.load(p).astype(np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(labels):
            raise ValueError(
                f"{p}: expected a ({len(labels)}, d) array in label order, got {arr.shape}"
            )
        return arr
    table = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(table, dict):
        raise ValueError(f"{p}: expected a JSON object {{label: [floats]}}")
    rows = []
    for label in labels:
        if label in table:
            rows.append(np.asarray(table[label], dtype=np.float32))
            continue
        words = [w for w in re.split(r"[\s_\-]+", label.lower()) if w]
        found = [np.asarray(table[w], dtype=np.float32) for w in words if w in table]
        if not found:
            raise ValueError(f"{p}: no vector for label {label!r} (nor for its words {words})")
        rows.append(np.mean(found, axis=0))
    dims = {r.shape for r in rows}
    if len(dims) != 1:
        raise ValueError(f"{p}: vectors of different shapes {sorted(dims)}")
    return np.stack(rows).astype(np.float32)


class GraphConvolution(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return adjacency @ (x @ self.weight)  # (C, out)


class GCNHead(nn.Module):
    explain_method = "cam"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        embeddings: torch.Tensor,
        adjacency: torch.Tensor,
        cosine: bool = False,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if embeddings.ndim != 2 or embeddings.shape[0] != num_classes:
            raise ValueError(
                f"embeddings must be ({num_classes}, d), got {tuple(embeddings.shape)}"
            )
        if adjacency.shape != (num_classes, num_classes):
            raise ValueError(
                f"adjacency must be ({num_classes}, {num_classes}), got {tuple(adjacency.shape)}"
            )
        self.cosine = cosine
        hidden = hidden_dim or in_features
        self.register_buffer("embeddings", embeddings.float().clone())
        self.register_buffer("adjacency", adjacency.float().clone())
        self.gc1 = GraphConvolution(embeddings.shape[1], hidden)
        self.gc2 = GraphConvolution(hidden, in_features)
        self.act = nn.LeakyReLU(0.2)
        self.fc = make_classifier(in_features, num_classes, cosine)

    def channel_attention(self) -> torch.Tensor:
        """a = σ(max_c G[c, :]) (D,): image-independent, a constant once trained."""
        adj: torch.Tensor = self.adjacency  # type: ignore[assignment]
        emb: torch.Tensor = self.embeddings  # type: ignore[assignment]
        g = self.act(self.gc1(emb, adj))  # (C, H)
        g = self.act(self.gc2(g, adj))  # (C, D)
        return torch.sigmoid(g.max(dim=0).values)  # (D,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        a = self.channel_attention().to(features.dtype)
        pooled = features.mean(dim=(2, 3)) * a  # (B, D) == GAP(a ⊙ F)
        return self.fc(pooled)  # (B, C)

    def explain(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, C, H, W): the class activation map of a ⊙ F (exact: the head
        is a pooled linear layer once a is fixed)."""
        return class_activation_map(self.fc, features, self.channel_attention())
