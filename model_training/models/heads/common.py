"""Pieces shared by the heads: the cosine layer, and the class activation map of a pooled
linear head (its `explain`, docs/method.md#where-a-tag-comes-from)."""

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


def class_activation_map(
    fc: nn.Module, features: torch.Tensor, channel_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """The class activation map of `fc` applied to the global average of `features`
    (B, D, H, W) (optionally times `channel_scale` (D,) first, as the GCN head does): label c's
    weights applied at every position, (B, C, H, W).

    Exact: averaging and a linear layer commute, so the map's mean over H x W is the layer's
    output less its bias. A cosine layer divides its input by its norm, a per-image constant:
    the map is divided by it too, and its mean is the cosine (before the [-1, 1] clamp).
    """
    if channel_scale is not None:
        features = features * channel_scale.to(features.dtype).view(1, -1, 1, 1)
    if isinstance(fc, CosineLinear):
        weight = nnf.normalize(fc.weight, dim=-1)  # (C, D)
        norm = features.mean(dim=(2, 3)).norm(dim=1).clamp_min(1e-12)  # normalize()'s eps
        return weighted_cam(features, weight) / norm.view(-1, 1, 1, 1)
    if isinstance(fc, nn.Linear):
        return weighted_cam(features, fc.weight)
    raise TypeError(f"no class activation map for {type(fc).__name__}")


def weighted_cam(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class weights applied at every position of a feature map: (B, D, H, W) with (C, D),
    or per image (B, C, D) -> (B, C, H, W). Its mean over H x W is `weight` applied to the
    pooled features (global average pooling and a linear map commute)."""
    weight = weight.to(features.dtype)
    if weight.dim() == 2:
        return torch.einsum("cd,bdhw->bchw", weight, features)
    return torch.einsum("bcd,bdhw->bchw", weight, features)


def softmax_mixture_cam(
    features: torch.Tensor,
    class_weight: torch.Tensor,
    class_bias: torch.Tensor | None,
    tag_matrix: torch.Tensor,
) -> torch.Tensor:
    """Maps for tags scored as a fixed linear map of softmax probabilities:
    s_n = sum_k M[n, k] p_k with p = softmax(W GAP(F) + b) (e.g. ImageNet-1k classes summed
    into WordNet synsets). Tag n's map is the CAM of its classes mixed by their share of its
    score, sum_k M[n, k] p_k CAM_k / s_n: the CAM of a pooled linear head whose weights are
    the score-weighted mean of the classes' (exact for a tag of one class).

    features (B, D, H, W), class_weight W (K, D), class_bias b (K,) or None, tag_matrix M
    (N, K) -> (B, N, H, W)."""
    logits = features.mean(dim=(2, 3)) @ class_weight.t().to(features.dtype)  # (B, K)
    if class_bias is not None:
        logits = logits + class_bias.to(features.dtype)
    probs = logits.softmax(dim=1)  # (B, K)
    share = tag_matrix.to(features.dtype).unsqueeze(0) * probs.unsqueeze(1)  # (B, N, K)
    share = share / share.sum(dim=2, keepdim=True).clamp_min(1e-12)
    weight = torch.einsum("bnk,kd->bnd", share, class_weight.to(features.dtype))  # (B, N, D)
    return weighted_cam(features, weight)
