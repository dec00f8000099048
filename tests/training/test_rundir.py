"""The run directory: what training writes reads back the same way, checkpoints are written
whole, and an inconsistent or missing run is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_training.config import load_config
from model_training.models import build_model
from model_training.rundir import RunDir, RunDirError, TrainLog, load_run, load_trained

LABELS = ["red", "green", "blue"]


def _finished_run(root: Path) -> RunDir:
    """A run directory as `fit` leaves it (without the plots), around a tiny linear model."""
    cfg = load_config(None, ["model.backbone=test_efficientnet", "model.head=linear"])
    torch.manual_seed(0)
    model = build_model(cfg, LABELS)
    run = RunDir(root)
    run.create()
    run.write_inputs(cfg, LABELS, [Path("images/a.png"), Path("images/b.png")])
    best = {"mAP": 71.5, "epoch": 2, "source": "ema"}
    run.save_best({"model": model.state_dict(), "labels": LABELS, "config": cfg.to_dict(),
                   "best": best})  # fmt: skip
    thresholds = np.array([0.25, 0.5, 0.125])
    run.write_thresholds(LABELS, thresholds)
    history = [{"epoch": 1, "val_mAP": 60.0}, {"epoch": 2, "val_mAP": 71.5}]
    run.write_metrics(history, {"selected": best, "val": {"mAP": 71.5, "num_images": 2}})
    run.write_per_class(LABELS, np.array([5, 0, 3]), np.array([0.5, np.nan, 0.25]), None,
                        thresholds)  # fmt: skip
    return run


def test_what_training_writes_reads_back(tmp_path: Path) -> None:
    run = _finished_run(tmp_path / "run")
    model, cfg, labels, thresholds = load_trained(run.root)
    saved = torch.load(run.best, weights_only=False)
    assert labels == LABELS and cfg.model.head == "linear"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key], rtol=0, atol=0)
    assert thresholds is not None
    np.testing.assert_array_equal(thresholds, [0.25, 0.5, 0.125])

    trained = load_run(run.root)
    assert trained.labels == LABELS
    assert trained.selected == {"mAP": 71.5, "epoch": 2, "source": "ema"}
    assert trained.final["val"]["num_images"] == 2
    assert trained.recorded_val == ["images/a.png", "images/b.png"]
    assert trained.per_class == [
        {"label": "red", "train_positives": "5", "val_AP": "50.00", "test_AP": "",
         "threshold": "0.2500"},
        {"label": "green", "train_positives": "0", "val_AP": "", "test_AP": "",
         "threshold": "0.5000"},
        {"label": "blue", "train_positives": "3", "val_AP": "25.00", "test_AP": "",
         "threshold": "0.1250"},
    ]  # fmt: skip
    assert json.loads(run.metrics.read_text())["epochs"][1]["val_mAP"] == 71.5
    assert run.labels.read_text() == "red\ngreen\nblue\n"


def test_checkpoints_are_replaced_whole(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create()
    run.save_last({"epoch": 0, "history": []})
    run.save_last({"epoch": 1, "history": [{"epoch": 1}]})
    assert run.load_last() == {"epoch": 1, "history": [{"epoch": 1}]}
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["last.pt"]  # no .tmp left


def test_start_and_resume_checks(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create()
    run.check_start(resume=False)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        run.check_start(resume=True)
    run.save_last({"epoch": 0})
    run.check_start(resume=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        run.check_start(resume=False)


def test_inconsistent_or_missing_runs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nope")
    run = _finished_run(tmp_path / "run")
    run.labels.write_text("red\ngreen\n")
    with pytest.raises(RunDirError, match="labels that differ"):
        load_run(run.root)
    run.best.unlink()
    with pytest.raises(FileNotFoundError, match="is this a finished run"):
        load_trained(run.root)
    with pytest.raises(RunDirError, match="cannot load the run"):
        load_run(run.root)


def test_train_log_only_on_rank_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunDir(tmp_path)
    TrainLog(run.log)("epoch 1/2")
    TrainLog(None)("not rank 0")
    assert run.log.read_text() == "epoch 1/2\n"
    assert capsys.readouterr().out == "epoch 1/2\n"
