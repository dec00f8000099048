"""One training epoch and one evaluation pass. No file I/O, no argument parsing."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .optim import SAM, BatchNormStatsFrozen, ModelEMA


@dataclass
class StepContext:
    """Everything a training step needs."""

    model: nn.Module  # possibly DDP-wrapped
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    sam: SAM | None = None
    ema: ModelEMA | None = None
    ema_source: nn.Module | None = None  # the unwrapped model the EMA follows
    grad_clip: float | None = None
    amp_dtype: torch.dtype = torch.float16
    channels_last: bool = False  # batches in NHWC memory format (match the model's)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() == 4:
        return x.to(device, memory_format=torch.channels_last, non_blocking=True)
    return x.to(device, non_blocking=True)


@dataclass
class EpochStats:
    loss: float
    lr: float
    images: int
    seconds: float
    skipped_steps: int = 0
    history: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def autocast(
    amp: bool, device: torch.device, dtype: torch.dtype
) -> contextlib.AbstractContextManager[object]:
    """Autocast on `device` when `amp` (CUDA: float16 or bfloat16; CPU: bfloat16)."""
    if amp:
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def _autocast(ctx: StepContext) -> contextlib.AbstractContextManager[object]:
    return autocast(ctx.amp, ctx.device, ctx.amp_dtype)


def _forward_loss(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with _autocast(ctx):
        out = ctx.model(x)
    return ctx.loss_fn(out.float(), y)  # losses always in fp32


def _optimizer_step(ctx: StepContext) -> None:
    if ctx.grad_clip is not None:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for g in ctx.optimizer.param_groups for p in g["params"]], ctx.grad_clip
        )
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()


def train_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimisation step (two forward/backward passes with SAM). Returns the loss at w,
    detached and left on the device (reading it would synchronise a GPU every step)."""
    ctx.optimizer.zero_grad(set_to_none=True)
    loss = _forward_loss(ctx, x, y)
    ctx.scaler.scale(loss).backward()
    if ctx.sam is not None and ctx.sam.perturb():
        ctx.optimizer.zero_grad(set_to_none=True)
        with BatchNormStatsFrozen(ctx.model):
            loss_at_neighbour = _forward_loss(ctx, x, y)
        ctx.scaler.scale(loss_at_neighbour).backward()
        ctx.sam.restore()
    _optimizer_step(ctx)
    ctx.scheduler.step()
    if ctx.ema is not None:
        ctx.ema.update(ctx.ema_source if ctx.ema_source is not None else ctx.model)
    return loss.detach()


class _LossReadback:
    """Losses stay on the device and are read back in groups (a read synchronises a GPU):
    finite ones are averaged, non-finite ones raise without AMP and are counted as steps the
    GradScaler skipped with it. Also feeds the progress bar."""

    def __init__(self, ctx: StepContext, bar: object) -> None:
        self.ctx = ctx
        self.bar = bar
        self.pending: list[torch.Tensor] = []
        self.losses: list[float] = []
        self.skipped = 0
        self.images = 0
        self.start = time.perf_counter()

    def drain(self, step: int) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu().tolist()
        self.pending.clear()
        for v in values:
            if math.isfinite(v):
                self.losses.append(v)
            elif self.ctx.amp:
                self.skipped += 1
            else:
                raise FloatingPointError(f"loss is {v} near step {step}")
        if hasattr(self.bar, "set_postfix") and self.losses:
            elapsed = time.perf_counter() - self.start
            self.bar.set_postfix(
                loss=f"{sum(self.losses) / len(self.losses):.4f}",
                lr=f"{self.ctx.optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{self.images / max(elapsed, 1e-9):.1f}",
                refresh=False,
            )


def train_one_epoch(
    ctx: StepContext,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    max_steps: int | None = None,
    progress: Callable[[Iterable[tuple[torch.Tensor, torch.Tensor]]], Iterable[object]]
    | None = None,
    sync_every: int = 10,
) -> EpochStats:
    """Train over `loader`. Losses are read back every `sync_every` steps (progress bar,
    non-finite check): a non-finite loss raises without AMP; with AMP it is a step the
    GradScaler skipped, counted in `skipped_steps`."""
    ctx.model.train()
    it: Iterable[object] = progress(loader) if progress is not None else loader
    readback = _LossReadback(ctx, it)
    step = 0
    for step, batch in enumerate(it):
        if max_steps is not None and step >= max_steps:
            break
        pair: tuple[torch.Tensor, torch.Tensor] = batch  # type: ignore[assignment]
        x = to_device(pair[0], ctx.device, ctx.channels_last)
        y = pair[1].to(ctx.device, non_blocking=True)
        readback.pending.append(train_step(ctx, x, y))
        readback.images += x.shape[0]
        if len(readback.pending) >= sync_every:
            readback.drain(step)
    readback.drain(step)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    losses = readback.losses
    return EpochStats(
        loss=sum(losses) / max(len(losses), 1),
        lr=float(ctx.optimizer.param_groups[0]["lr"]),
        images=readback.images,
        seconds=time.perf_counter() - readback.start,
        skipped_steps=readback.skipped,
        history=losses,
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) and targets (N, C) over a loader. `model` must have
    `probabilities(outputs)` (a `MultilabelClassifier`)."""
    model.eval()
    to_probs: Callable[[torch.Tensor], torch.Tensor] = model.probabilities  # type: ignore[assignment]
    scores, targets = [], []
    for x, y in loader:
        x = to_device(x, device, channels_last)
        with autocast(amp, device, amp_dtype):
            out = model(x)
        scores.append(to_probs(out.float()).cpu().numpy())
        targets.append(y.numpy())
    if not scores:
        raise ValueError("evaluation loader is empty")
    return np.concatenate(scores), np.concatenate(targets)
