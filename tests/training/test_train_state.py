"""The train state: a checkpoint restored into a fresh state continues exactly where the
original would have gone, and the best-weights bookkeeping follows the better of raw and EMA."""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from model_training.config import load_config
from model_training.train_state import TrainState

CFG = load_config(None, ["optim.name=sgd", "train.ema=true", "train.ema_decay=0.9"])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def _step(state: TrainState, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 4, generator=g), torch.rand(6, 3, generator=g)
    state.model.train()
    state.optimizer.zero_grad()
    nn.functional.mse_loss(state.model(x), y).backward()
    state.optimizer.step()
    state.scheduler.step()
    assert state.ema is not None
    state.ema.update(state.model)


def _record(epoch: int, raw: float, ema: float | None) -> dict[str, Any]:
    return {"epoch": epoch, "val_mAP": raw, "val_mAP_ema": ema}


def test_checkpoint_round_trip_continues_identically() -> None:
    state = TrainState.create(_model(), CFG, total_steps=20, fp16_scaler=False)
    for step in range(3):
        _step(state, step)
    state.epoch = 3
    state.observe(_record(1, 50.0, 55.0))
    state.observe(_record(2, 52.0, 54.0))
    buffer = io.BytesIO()
    torch.save(state.checkpoint(CFG, ["a", "b", "c"]), buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))  # other init
    model.load_state_dict(checkpoint["model"])
    resumed = TrainState.create(model, CFG, total_steps=20, fp16_scaler=False)
    resumed.restore(checkpoint, epochs=10)
    assert (resumed.epoch, resumed.bad_epochs, resumed.stopped_early) == (3, 1, False)
    assert resumed.best == {"mAP": 55.0, "epoch": 1, "source": "ema"}
    assert resumed.history == state.history
    assert checkpoint["labels"] == ["a", "b", "c"] and checkpoint["config"] == CFG.to_dict()

    for step in range(3, 6):  # the same next steps: same weights, EMA, momentum and lr
        _step(state, step)
        _step(resumed, step)
    assert state.ema is not None and resumed.ema is not None
    for a, b in ((state.model, resumed.model), (state.ema.module, resumed.ema.module)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert state.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    assert resumed.ema.updates == state.ema.updates == 6


def test_best_follows_the_better_weights_and_counts_epochs_without_gain() -> None:
    state = TrainState.create(_model(), CFG, total_steps=10, fp16_scaler=False)
    assert state.observe(_record(1, 40.0, None))
    assert state.best == {"mAP": 40.0, "epoch": 1, "source": "raw"}
    assert state.best_weights() is state.model
    assert state.observe(_record(2, 41.0, 45.0))
    assert state.best["source"] == "ema"
    assert state.ema is not None and state.best_weights() is state.ema.module
    assert not state.observe(_record(3, 45.0, 44.0))  # equal is no gain
    assert not state.observe(_record(4, 30.0, 30.0))
    assert state.bad_epochs == 2 and len(state.history) == 4
    best = state.best_checkpoint(CFG, ["a", "b", "c"])
    assert best["best"] == {"mAP": 45.0, "epoch": 2, "source": "ema"}
    assert best["model"].keys() == state.model.state_dict().keys()


def test_a_run_that_stopped_early_resumes_at_its_end() -> None:
    state = TrainState.create(_model(), CFG, total_steps=10, fp16_scaler=False)
    state.epoch, state.stopped_early = 4, True
    checkpoint = state.checkpoint(CFG, ["a", "b", "c"])
    assert checkpoint["epoch"] == 3
    resumed = TrainState.create(_model(), CFG, total_steps=10, fp16_scaler=False)
    resumed.restore(checkpoint, epochs=10)
    assert (resumed.epoch, resumed.stopped_early) == (10, True)
