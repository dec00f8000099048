"""What training changes from step to step, and what `--resume` restores: the model, its EMA,
the optimiser, the learning-rate schedule, the AMP gradient scaler, and the bookkeeping (epochs
done, per-epoch history, best validation score and which weights reached it, epochs without a
gain, whether early stopping ended the run). `checkpoint()` is the content of
`checkpoints/last.pt`; `best_checkpoint()` that of `checkpoints/best.pt`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import Config
from .optim import ModelEMA, build_optimizer, build_scheduler


def _no_best() -> dict[str, Any]:
    return {"mAP": -1.0, "epoch": -1, "source": "raw"}


@dataclass
class TrainState:
    model: nn.Module  # never DDP-wrapped: the weights the EMA follows and checkpoints hold
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None = None
    epoch: int = 0  # epochs done = the 0-based index of the next one
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best: dict[str, Any] = field(default_factory=_no_best)  # {"mAP", "epoch", "source"}
    bad_epochs: int = 0  # epochs since the best validation mAP
    stopped_early: bool = False

    @classmethod
    def create(
        cls, model: nn.Module, cfg: Config, total_steps: int, fp16_scaler: bool
    ) -> TrainState:
        """A fresh state for `model` (load resumed weights into it first: the EMA starts as
        a copy of them)."""
        optimizer = build_optimizer(model, cfg.optim, cfg.train.lr)
        scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.lr, total_steps)
        scaler = torch.amp.GradScaler("cuda", enabled=fp16_scaler)
        ema = ModelEMA(model, cfg.train.ema_decay) if cfg.train.ema else None
        return cls(model, optimizer, scheduler, scaler, ema)

    def observe(self, record: dict[str, Any]) -> bool:
        """Add an epoch's record (with `val_mAP` and `val_mAP_ema`, None without EMA); True
        when its better weights, raw or EMA, beat the best so far."""
        source, score = "raw", record["val_mAP"]
        if record["val_mAP_ema"] is not None and record["val_mAP_ema"] > score:
            source, score = "ema", record["val_mAP_ema"]
        improved = bool(score > self.best["mAP"] + 1e-9)
        if improved:
            self.best = {"mAP": score, "epoch": record["epoch"], "source": source}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.history.append(record)
        return improved

    def best_weights(self) -> nn.Module:
        if self.best["source"] == "ema" and self.ema is not None:
            return self.ema.module
        return self.model

    def best_checkpoint(self, cfg: Config, labels: list[str]) -> dict[str, Any]:
        """The selected weights with what rebuilding the model needs."""
        weights = self.best_weights().state_dict()
        return {"model": weights, "labels": labels, "config": cfg.to_dict(), "best": self.best}

    def checkpoint(self, cfg: Config, labels: list[str]) -> dict[str, Any]:
        """Everything `restore` needs to continue exactly where this state is."""
        return {
            "epoch": self.epoch - 1,  # the last epoch done
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": cfg.to_dict(),
            "labels": labels,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
        }

    def restore(self, checkpoint: dict[str, Any], epochs: int) -> None:
        """Continue from a `checkpoint()` of a run of `epochs` epochs. The model's weights are
        not touched: they were loaded before this state was created (see `create`)."""
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint["ema"] is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.history = checkpoint["history"]
        self.best = checkpoint["best"]
        self.bad_epochs = checkpoint["bad_epochs"]
        self.stopped_early = bool(checkpoint.get("stopped_early"))
        # A run that stopped early has ended: only its final step is left to redo.
        self.epoch = epochs if self.stopped_early else checkpoint["epoch"] + 1
