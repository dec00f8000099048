"""`ml_decoder`: the ML-Decoder transformer head (Ridnik et al. 2021) as used by the paper.

Feature map -> tokens -> Linear(D -> E) + LeakyReLU(0.2) (ReLU for BCE/ASL); Q = min(C, 100)
fixed random queries (a buffer: not learned); one decoder layer with cross-attention only (no
self-attention between queries), add & norm, FFN, add & norm; group fully-connected output
where query i owns a weight block W_i (E x g), g = ceil(C / Q). With cosine output both the
query output h_i and each column of W_i are L2-normalised, so every output is a cosine.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as nnf


class MLDecoderHead(nn.Module):
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

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]
        tokens = features.flatten(2).transpose(1, 2)  # (B, HW, D)
        memory = self.act(self.embed(tokens))  # (B, HW, E)
        queries: torch.Tensor = self.queries  # type: ignore[assignment]
        tgt = queries.unsqueeze(0).expand(b, -1, -1)  # (B, Q, E)
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
