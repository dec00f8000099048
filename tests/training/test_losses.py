from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as nnf

from model_training.losses import LOSSES, AsymmetricAngularLoss, AsymmetricLoss, build_loss


def _data(seed: int = 0, b: int = 6, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, generator=g) * 3
    y = (torch.rand(b, c, generator=g) > 0.6).float()
    return x, y


def test_registry_names() -> None:
    assert LOSSES.names() == ["aam", "asl", "bce"]
    with pytest.raises(KeyError, match="aam, asl, bce"):
        build_loss("focal")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_asl_without_focusing_is_bce(reduction: str) -> None:
    x, y = _data()
    asl = AsymmetricLoss(gamma_pos=0, gamma_neg=0, clip=0, reduction=reduction)  # type: ignore[arg-type]
    ref = nnf.binary_cross_entropy_with_logits(x, y, reduction=reduction)
    assert asl(x, y).item() == pytest.approx(ref.item(), rel=1e-6)
    bce = build_loss("bce", reduction=reduction)
    assert bce(x, y).item() == pytest.approx(ref.item(), rel=1e-6)


def _np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _asl_numpy(x, y, gp, gn, clip):  # type: ignore[no-untyped-def]
    p = _np_sigmoid(x)
    pm = np.maximum(p - clip, 0)
    return float(np.sum(-y * (1 - p) ** gp * np.log(p) - (1 - y) * pm**gn * np.log(1 - pm)))


def test_asl_against_numpy() -> None:
    x, y = _data(1)
    got = AsymmetricLoss(gamma_pos=1, gamma_neg=4, clip=0.05)(x, y).item()
    assert got == pytest.approx(_asl_numpy(x.double().numpy(), y.numpy(), 1, 4, 0.05), rel=1e-5)


def _aam_numpy(cos, y, s, m, k, gp, gn, clip):  # type: ignore[no-untyped-def]
    # Direct evaluation of the formula in docs/method.md#aam-asymmetric-angular-margin, float64.
    p_pos = _np_sigmoid(s * (cos - m))
    p_neg = _np_sigmoid(-s * (cos + m))
    if gp > 0 or gn > 0:
        p_neg = np.minimum(p_neg + clip, 1.0)
        w = y * p_neg**gp + (1 - y) * p_pos**gn
    else:
        w = np.ones_like(cos)
    return float(
        -np.sum(w * ((k / s) * y * np.log(p_pos) + ((1 - k) / s) * (1 - y) * np.log(p_neg)))
    )


@pytest.mark.parametrize(
    ("s", "m", "k", "gp", "gn", "clip"),
    [
        (30, 0.35, 0.8, 0, 0, 0.05),  # class defaults
        (23, 0.0, 0.7, 0, 0, 0.0),  # paper configs
        (7, 0.0, 0.8, 0, 1, 0.05),  # OTX port
        (10, 0.1, 0.5, 2, 3, 0.1),
    ],
)
def test_aam_against_numpy(s: float, m: float, k: float, gp: float, gn: float, clip: float) -> None:
    g = torch.Generator().manual_seed(3)
    cos = torch.rand(8, 6, generator=g) * 2 - 1
    y = (torch.rand(8, 6, generator=g) > 0.5).float()
    loss = AsymmetricAngularLoss(s=s, m=m, k=k, gamma_pos=gp, gamma_neg=gn, clip=clip)
    expected = _aam_numpy(cos.double().numpy(), y.numpy(), s, m, k, gp, gn, clip)
    assert loss(cos, y).item() == pytest.approx(expected, rel=1e-5)
    mean = AsymmetricAngularLoss(s=s, m=m, k=k, gamma_pos=gp, gamma_neg=gn, clip=clip,
                                 reduction="mean")  # fmt: skip
    assert mean(cos, y).item() == pytest.approx(expected / cos.numel(), rel=1e-5)


@pytest.mark.parametrize("name", ["bce", "asl", "aam"])
def test_ignored_targets_contribute_nothing(name: str) -> None:
    x, y = _data(2)
    x = x.tanh()  # valid cosines for aam too
    x.requires_grad_(True)
    t = y.clone()
    t[0, :] = -1
    t[:, 1] = -1
    loss_fn = build_loss(name)
    loss_fn(x, t).backward()
    assert x.grad is not None
    assert torch.all(x.grad[0] == 0)
    assert torch.all(x.grad[:, 1] == 0)
    keep = t >= 0
    # equal to the loss on the kept entries alone
    ref = sum(
        loss_fn(x[i : i + 1, j : j + 1], t[i : i + 1, j : j + 1]).item()
        for i in range(t.shape[0])
        for j in range(t.shape[1])
        if keep[i, j]
    )
    assert loss_fn(x, t).item() == pytest.approx(ref, rel=1e-5)


def test_aam_fp16_inputs_stay_finite() -> None:
    cos = torch.tensor([[1.0, -1.0, 0.999, -0.999]], dtype=torch.float16, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    loss = AsymmetricAngularLoss(s=30, m=0.35, k=0.8, gamma_pos=1, gamma_neg=4)(cos, y)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert cos.grad is not None
    assert torch.isfinite(cos.grad).all()
