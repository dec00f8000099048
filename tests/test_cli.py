"""The console entry points as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mltag_artifact import Artifact

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("mltag-serve", ["MLTAG_MAX_BATCH_SIZE", "--artifact-dir", "--require-gpu", "/tag"]),
        ("mltag-train", ["demo-artifact", "train", "evaluate", "export", "data", "ONNX artifact"]),
    ],
)
def test_help_explains_itself(command: str, expected: list[str]) -> None:
    result = run(str(BIN / command), "--help")
    assert result.returncode == 0
    for text in expected:
        assert text in result.stdout


def test_module_forms_match_scripts() -> None:
    assert run(sys.executable, "-m", "service", "--help").returncode == 0
    assert run(sys.executable, "-m", "model_training", "--help").returncode == 0


def test_serve_refuses_a_corrupted_artifact(demo_artifact: Artifact, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes((demo_artifact.onnx_path).read_bytes() + b"x")
    manifest = json.loads((demo_artifact.directory / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps(manifest))
    result = run(str(BIN / "mltag-serve"), "--artifact-dir", str(bad))
    assert result.returncode == 2
    assert "cannot start" in result.stderr
    assert "onnx.sha256" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_missing_gpu(demo_artifact: Artifact) -> None:
    result = run(str(BIN / "mltag-serve"), "--artifact-dir", str(demo_artifact.directory),
                 "--provider", "cuda")  # fmt: skip
    assert result.returncode == 2
    assert "provider 'cuda' requested" in result.stderr


def test_serve_rejects_bad_settings() -> None:
    result = run(str(BIN / "mltag-serve"), "--max-batch-size", "0")
    assert result.returncode == 2
    assert "max_batch_size" in result.stderr


def test_demo_artifact_command(tmp_path: Path) -> None:
    result = run(str(BIN / "mltag-train"), "demo-artifact", "--output", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    check = run(sys.executable, "-m", "mltag_artifact", "check", str(tmp_path / "a"))
    assert check.returncode == 0
    assert "sha256 verified" in check.stdout


def test_train_cli_wiring() -> None:
    assert run(str(BIN / "mltag-train"), "data", "openclipart", "--help").returncode == 0
    assert run(str(BIN / "mltag-train"), "export", "--help").returncode == 0
    neither = run(str(BIN / "mltag-train"), "evaluate", "--data", "x.json")
    assert neither.returncode == 2
    assert "one of the arguments --run --artifact is required" in neither.stderr


def test_serve_refuses_a_manifest_whose_input_size_disagrees_with_the_graph(
    demo_artifact: Artifact, tmp_path: Path
) -> None:
    """Exit 2 with a message, never a traceback (the graph takes 64x64, the manifest says 32)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(demo_artifact.onnx_path.read_bytes())
    manifest = json.loads((demo_artifact.directory / "manifest.json").read_text())
    manifest["preprocessing"].update(height=32, width=32)
    manifest["onnx"].pop("explain")  # only model.onnx was copied
    (bad / "manifest.json").write_text(json.dumps(manifest))
    result = run(str(BIN / "mltag-serve"), "--artifact-dir", str(bad))
    assert result.returncode == 2, result.stderr
    assert "cannot start" in result.stderr
    assert "[32, 32, 3]" in result.stderr
    assert "Traceback" not in result.stderr
