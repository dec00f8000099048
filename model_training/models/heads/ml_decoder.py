"""`ml_decoder`: the ML-Decoder transformer head (Ridnik et al. 2021) as used by the paper.

Feature map -> tokens -> Linear(D -> E) + LeakyReLU(0.2) (ReLU for BCE/ASL); Q = min(C, 100)
fixed random queries (a buffer: not learned); one decoder layer with cross-attention only (no
self-attention between queries), add & norm, FFN, add & norm; group fully-connected output
where query i owns a weight block W_i (E x g), g = ceil(C / Q). With cosine output both the
query output h_i and each column of W_i are L2-normalised, so every output is a cosine.

`explain`: each label's query's cross-attention weights over the feature map, averaged over
the heads; the g labels of one query share its map (docs/method.md#where-a-tag-comes-from).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as nnf


class MLDecoderHead(nn.Module):
    explain_method = "attention"
    label_query: torch.Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        cosine: bool = False,
        num_queries: int = 100,
        embed_dim: int = 768,
        num_heads: int = 8,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        query_seed: int = 0,
    ) -> None:
        super().__init__()
        self.cosine = cosine
        self.num_classes = num_classes
        q = min(num_classes, num_queries)
        self.group = math.ceil(num_classes / q)
        self.embed = nn.Linear(in_features, embed_dim)
        self.act: nn.Module = nn.LeakyReLU(0.2) if cosine else nn.ReLU()
        g = torch.Generator().manual_seed(query_seed)
        # Fixed, non-learned queries: saved with the weights, never updated.
        self.register_buffer("queries", torch.randn(q, embed_dim, generator=g))
        self.cross_attn = nn.MultiheadAttention(
            embed_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ff_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, embed_dim),
        )
        self.drop2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.group_weight = nn.Parameter(torch.empty(q, embed_dim, self.group))
        nn.init.xavier_normal_(self.group_weight)
        self.group_bias = None if cosine else nn.Parameter(torch.zeros(num_classes))
        # Label c is output c % g of query c // g (the group FC's flatten). Not saved: derived.
        label_query = torch.arange(num_classes) // self.group
        self.register_buffer("label_query", label_query, persistent=False)

    def _memory(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attended tokens (B, HW, E) and the queries (B, Q, E)."""
        tokens = features.flatten(2).transpose(1, 2)  # (B, HW, D)
        memory = self.act(self.embed(tokens))  # (B, HW, E)
        queries: torch.Tensor = self.queries  # type: ignore[assignment]
        return memory, queries.unsqueeze(0).expand(features.shape[0], -1, -1)  # (B, Q, E)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        memory, tgt = self._memory(features)
        attn, _ = self.cross_attn(tgt, memory, memory, need_weights=False)
        h = self.norm1(tgt + self.drop1(attn))  # (B, Q, E)
        h = self.norm2(h + self.drop2(self.ffn(h)))
        w: torch.Tensor = self.group_weight  # (Q, E, g)
        if self.cosine:
            h = nnf.normalize(h, dim=-1)
            w = nnf.normalize(w, dim=1)
        out = torch.einsum("bqe,qeg->bqg", h, w).flatten(1)[:, : self.num_classes]  # (B, C)
        if self.cosine:
            return out.clamp(-1.0, 1.0)
        assert self.group_bias is not None
        return out + self.group_bias

    def explain(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, C, H, W): where each label's query looked, its attention
        weights (mean over the heads; each map sums to 1)."""
        b, _, h, w = features.shape
        memory, tgt = self._memory(features)
        _, weights = self.cross_attn(
            tgt, memory, memory, need_weights=True, average_attn_weights=True
        )  # (B, Q, HW)
        per_label = weights.index_select(1, self.label_query)  # (B, C, HW)
        return per_label.reshape(b, self.num_classes, h, w)
