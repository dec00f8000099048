"""What each head's `explain` computes, against closed forms on random features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_training.models.heads import GCNHead, LinearHead, MLDecoderHead
from model_training.models.heads.common import (
    CosineLinear,
    class_activation_map,
    softmax_mixture_cam,
)

B, D, H, W, C = 2, 16, 3, 5, 7


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(B, D, H, W, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cosine", [False, True])
def test_linear_cam_mean_is_the_head_output(features: torch.Tensor, cosine: bool) -> None:
    head = LinearHead(D, C, cosine=cosine).eval()
    cam = head.explain(features)
    assert cam.shape == (B, C, H, W)
    out = head(features)
    bias = torch.zeros(C) if cosine else head.fc.bias
    torch.testing.assert_close(cam.mean(dim=(2, 3)), out - bias, atol=1e-5, rtol=1e-5)


def test_gcn_cam_mean_is_the_head_output(features: torch.Tensor) -> None:
    adjacency = torch.rand(C, C, generator=torch.Generator().manual_seed(1))
    head = GCNHead(D, C, embeddings=torch.eye(C), adjacency=adjacency).eval()
    cam = head.explain(features)
    bias = getattr(head.fc, "bias", None)
    want = head(features) - (bias if bias is not None else 0)
    torch.testing.assert_close(cam.mean(dim=(2, 3)), want, atol=1e-5, rtol=1e-5)


def test_ml_decoder_maps_are_attention_through_the_query_groups(features: torch.Tensor) -> None:
    head = MLDecoderHead(D, C, num_queries=3, embed_dim=8, num_heads=2, ff_dim=16).eval()
    assert head.group == 3  # 7 labels on 3 queries: labels 0-2, 3-5, 6
    maps = head.explain(features)
    assert maps.shape == (B, C, H, W)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(B, C))  # a distribution
    torch.testing.assert_close(maps[:, 0], maps[:, 2])  # same query, same map
    torch.testing.assert_close(maps[:, 3], maps[:, 5])
    assert not torch.allclose(maps[:, 0], maps[:, 3])


def test_softmax_mixture_cam(features: torch.Tensor) -> None:
    k = 5
    fc = nn.Linear(D, k)
    tags = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 1.0, 0, 0], [0, 0, 0, 1.0, 1.0]])
    maps = softmax_mixture_cam(features, fc.weight, fc.bias, tags)
    assert maps.shape == (B, 3, H, W)
    cams = class_activation_map(fc, features)  # (B, K, H, W)
    torch.testing.assert_close(maps[:, 0], cams[:, 0])  # one class: its own CAM
    p = fc(features.mean(dim=(2, 3))).softmax(dim=1)  # (B, K)
    mix = (p[:, 1, None, None] * cams[:, 1] + p[:, 2, None, None] * cams[:, 2]) / (
        p[:, 1] + p[:, 2]
    ).view(-1, 1, 1)
    torch.testing.assert_close(maps[:, 1], mix, atol=1e-5, rtol=1e-5)


def test_cosine_layer_has_a_cam() -> None:
    assert isinstance(LinearHead(D, C, cosine=True).fc, CosineLinear)
