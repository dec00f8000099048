"""Shared fixtures: real (tiny) ONNX artifacts built by the repo's own demo builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltag_artifact import Artifact


@pytest.fixture(scope="session")
def demo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """uint8 NHWC colour tagger (normalises in the graph), 64x64 input."""
    from model_training.demo import write_demo_artifact

    return write_demo_artifact(tmp_path_factory.mktemp("artifact") / "demo")


@pytest.fixture(scope="session")
def demo_artifact_dir(demo_artifact: Artifact) -> Path:
    return demo_artifact.directory
