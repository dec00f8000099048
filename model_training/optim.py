"""Optimisers, SAM, the OneCycle schedule and the weights' EMA
(docs/method.md#training-recipe)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .config import OptimConfig


def param_groups(
    model: nn.Module, weight_decay: float, no_decay_bias_norm: bool = True
) -> list[dict[str, object]]:
    """Two groups: decayed weights, and (when asked) biases/norms/1-d params/queries without
    weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if no_decay_bias_norm and (p.ndim <= 1 or name.endswith(".bias") or "queries" in name):
            no_decay.append(p)
        else:
            decay.append(p)
    groups: list[dict[str, object]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bias_norm)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=False)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
    raise ValueError(f"unknown optim.name {cfg.name!r}; valid: sgd, adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle stepped per iteration: lr/start_div -> lr over warmup_pct, cosine down to
    lr/end_div. `constant` keeps lr."""
    if cfg.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(total_steps, 2),
        pct_start=cfg.warmup_pct,
        div_factor=cfg.start_div,
        final_div_factor=cfg.end_div / cfg.start_div,  # torch: final = initial / final_div
        cycle_momentum=False,
    )


class SAM:
    """Sharpness-Aware Minimisation (Foret et al. 2021) around any base optimiser.

    Step: gradients g at w -> move to w + ρ·g/‖g‖ (`perturb`) -> gradients there ->
    back to w (`restore`) -> base optimiser step with those gradients. The direction is scale
    invariant, so gradients scaled by AMP's GradScaler need no unscaling here.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        self.base = base
        self.rho = rho
        self._moved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _params(self) -> Iterable[torch.Tensor]:
        for group in self.base.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p

    @torch.no_grad()
    def perturb(self) -> bool:
        """Move to the worst-case neighbour; False (and no move) on non-finite gradients."""
        params = list(self._params())
        if not params:
            return False
        norm = torch.norm(torch.stack([p.grad.detach().float().norm(2) for p in params]), 2)  # type: ignore[union-attr]
        if not torch.isfinite(norm):
            return False
        scale = self.rho / (norm + 1e-12)
        self._moved = []
        for p in params:
            e = p.grad * scale.to(p.grad.dtype)  # type: ignore[union-attr]
            p.add_(e)
            self._moved.append((p, e))
        return True

    @torch.no_grad()
    def restore(self) -> None:
        for p, e in self._moved:
            p.sub_(e)
        self._moved = []


class BatchNormStatsFrozen:
    """Context: BatchNorm running statistics are not updated (SAM's second forward pass)."""

    def __init__(self, model: nn.Module) -> None:
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[float | None] = []

    def __enter__(self) -> None:
        self.saved = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, mom in zip(self.bns, self.saved, strict=True):
            m.momentum = mom


class ModelEMA:
    """Exponential moving average of a model's weights (and buffers).

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so
    the EMA is usable on short runs and small data sets too.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9993) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        ema_float, src_float = [], []
        for name, e in self.module.state_dict().items():
            v = src[name].detach()
            if e.dtype.is_floating_point:
                ema_float.append(e)
                src_float.append(v.to(e.dtype))
            else:
                e.copy_(v)
        torch._foreach_lerp_(ema_float, src_float, 1.0 - d)  # e += (1 - d)(v - e), fused

    def state_dict(self) -> dict[str, object]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[call-overload]
