from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_training.cli import main

from .synth import make_coco

REPO = Path(__file__).resolve().parents[2]


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from model_training.cli import build_parser; build_parser(); "
        "assert 'torch' not in sys.modules, 'torch imported at CLI import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _config(tmp_path: Path, train: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"""
data:
  format: coco
  train: {train}
  image_size: 32
  val_fraction: 0.25
  num_workers: 0
model:
  backbone: test_efficientnet
  head: linear
optim: {{name: adamw, sam: false}}
train: {{epochs: 2, batch_size: 16, lr: 0.01, device: cpu, progress: false}}
"""
    )
    return cfg


def test_train_evaluate_resume_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = make_coco(tmp_path / "data", 40, size=32, seed=3)
    test = make_coco(tmp_path / "data", 16, size=32, seed=4, name="test.json")
    cfg = _config(tmp_path, train)
    run = tmp_path / "run"
    assert (
        main(["train", "--config", str(cfg), "--set", "train.epochs=1", "--output", str(run)]) == 0
    )
    out = capsys.readouterr().out
    assert '"selected"' in out
    assert json.loads((run / "metrics.json").read_text())["final"]["epochs_run"] == 1
    # a finished run refuses to be overwritten; --resume with nothing left to do is a no-op
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--output", str(run)]) == 0
    capsys.readouterr()
    result_path = tmp_path / "eval.json"
    rc = main(["evaluate", "--run", str(run), "--data", str(test), "--device", "cpu",
               "--output", str(result_path)])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    full = json.loads(result_path.read_text())
    assert summary["num_images"] == 16
    assert [row["label"] for row in full["per_class_ap"]] == ["red", "green", "blue", "yellow"]
    assert 0 <= full["metrics"]["mAP"] <= 100
    # errors are one clear line, exit code 2
    assert main(["train", "--config", str(cfg), "--set", "data.format=xml", "--output",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "data.format" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    assert main(["evaluate", "--run", str(run), "--data", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err


def test_bf16_autocast_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train.amp=true` autocasts on a CPU too, to bfloat16 only (float16 is refused)."""
    train = make_coco(tmp_path / "data", 32, size=32, seed=7)
    cfg = _config(tmp_path, train)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--set", "train.amp=true", "--set",
                 "train.amp_dtype=bfloat16", "--output", str(run)]) == 0  # fmt: skip
    assert "device: cpu (AMP bfloat16)" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(e["train_loss"] > 0 for e in metrics["epochs"])
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--set", "train.amp=true",
                 "--output", str(tmp_path / "fp16")]) == 2  # fmt: skip
    assert "train.amp_dtype=bfloat16" in capsys.readouterr().err


def test_progressive_resizing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first half of the epochs trains at the smaller size, the rest (and everything
    after training) at data.image_size; other regimes and sizes >= image_size are refused."""
    train = make_coco(tmp_path / "data", 32, size=48, seed=8)
    cfg = _config(tmp_path, train)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--set", "data.image_size=48", "--set",
                 "train.progressive_sizes=[32]", "--output", str(run)]) == 0  # fmt: skip
    log = (run / "train.log").read_text()
    assert "epoch 1: training at 32x32" in log and "epoch 2: training at 48x48" in log
    assert json.loads((run / "metrics.json").read_text())["final"]["val"]["num_images"] == 8
    capsys.readouterr()
    for bad, needle in [
        (["train.progressive_sizes=[48]"], "below data.image_size"),
        (["train.progressive_sizes=[32]", "train.regime=partial"], "regime=full only"),
        (["train.progressive_sizes=[16]"], "at least 32 px"),
    ]:
        sets = [a for item in bad for a in ("--set", item)]
        args = ["train", "--config", str(cfg), "--set", "data.image_size=48", *sets]
        assert main([*args, "--output", str(tmp_path / "bad")]) == 2
        assert needle in capsys.readouterr().err


def test_progressive_phases() -> None:
    from model_training.config import TrainConfig

    cfg = TrainConfig(epochs=6, progressive_sizes=[128, 160])
    assert [cfg.size_at(e, 224) for e in range(6)] == [128, 128, 160, 160, 224, 224]
    cfg = TrainConfig(epochs=5, progressive_sizes=[160])
    assert [cfg.size_at(e, 224) for e in range(5)] == [160, 160, 160, 224, 224]
    assert TrainConfig(epochs=3).size_at(2, 224) == 224


@pytest.mark.integration
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    train = make_coco(tmp_path / "data", 48, size=32, seed=5)
    cfg = _config(tmp_path, train)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "model_training", "train", "--config", str(cfg), "--output", str(run),
           "--set", "optim.sam=true", "--set", "optim.name=sgd",
           "--set", "train.lr=0.05"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "processes: 2" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    assert metrics["final"]["val"]["num_images"] == 12


@pytest.mark.gpu
def test_same_config_trains_on_gpu_with_amp(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    train = make_coco(tmp_path / "data", 48, size=32, seed=6)
    cfg = _config(tmp_path, train)
    run = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--set", "train.device=cuda", "--set",
               "optim.sam=true", "--set", "loss.name=aam", "--output", str(run)])  # fmt: skip
    assert rc == 0
    assert "(AMP float16)" in (run / "train.log").read_text()
