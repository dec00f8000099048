"""docker/train.Dockerfile builds and its entrypoint runs. Slow (torch with its CUDA
libraries: ~6 GB, several minutes to build), so outside CI: `make test-docker-all`."""

from __future__ import annotations

import pytest

from .engine import REPO, Engine

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def train_image(engine: Engine) -> str:
    engine.build("docker/train.Dockerfile", "mltag:train", timeout_s=1800)
    return "mltag:train"


def test_entrypoint_help(engine: Engine, train_image: str) -> None:
    r = engine.run("run", "--rm", train_image, "--help")
    assert "usage: mltag-train" in r.stdout, r.stdout + r.stderr
    r = engine.run("run", "--rm", train_image)  # CMD ["--help"]
    assert "usage: mltag-train" in r.stdout


def test_only_working_console_scripts(engine: Engine, train_image: str) -> None:
    r = engine.run(
        "run", "--rm", "--entrypoint", "sh", train_image, "-c",
        "ls /opt/venv/bin | grep '^mltag-'; mltag-train --help >/dev/null && echo train-ok",
    )  # fmt: skip
    assert r.stdout.split() == ["mltag-train", "train-ok"], r.stdout + r.stderr


def test_torch_is_the_pinned_version(engine: Engine, train_image: str) -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "docker" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    r = engine.run(
        "run", "--rm", "--entrypoint", "python", train_image, "-c",
        "import torch, timm, onnxruntime; print(torch.__version__.split('+')[0])",
    )  # fmt: skip
    assert r.stdout.strip() == pins["torch"]
    info = engine.inspect("image", train_image)["Config"]
    assert info["User"] == "10001:10001"
    assert "ORT_DISABLE_TELEMETRY=1" in info["Env"]
