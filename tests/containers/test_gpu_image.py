"""The GPU image on a host whose GPU cannot be used: it refuses to start (exit 2, a message
saying why) instead of serving on CPU, and the GPU compose override does not restart it in
a loop.

Without a registry the image is built on a CPU-only stand-in base (no CUDA libraries, like a
host whose driver is missing or too old for CUDA 13); ONNX Runtime then cannot create its
CUDA provider, which is the case the refusal exists for."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import COMPOSE_FILE, COMPOSE_GPU_FILE, Stack, load_compose, make_stack
from .engine import Engine

pytestmark = pytest.mark.docker


def _gpu_service() -> dict:
    mltag: dict = load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)["services"]["mltag"]
    return mltag


def test_refuses_to_start_without_a_usable_gpu(engine: Engine, gpu_image: str) -> None:
    env = [f"{k}={v}" for k, v in _gpu_service()["environment"].items() if "$" not in str(v)]
    argv = ["run", "--rm", "--read-only", "--tmpfs", "/tmp"]
    for item in env:
        argv += ["-e", item]
    t0 = time.monotonic()
    r = engine.run(*argv, gpu_image, check=False, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60
    message = r.stderr.split("mltag-serve: cannot start:", 1)
    assert len(message) == 2, r.stderr
    assert "gpu" in message[1].lower(), r.stderr
    assert "Started server" not in r.stdout + r.stderr  # it never opened its port


def _max_restarts(policy: str) -> int:
    """The GPU override's restart policy must not restart exit 2 forever."""
    if policy == "no":
        return 0
    m = re.fullmatch(r"on-failure:(\d+)", policy)
    assert m, f"restart: {policy} restarts a refusal (exit 2) forever; use on-failure:N or no"
    return int(m.group(1))


@pytest.fixture
def gpu_stack(compose: Engine, gpu_image: str, tmp_path: Path) -> Iterator[Stack]:
    """The project's compose files with the GPU override, plus what this host needs: no device
    reservation (there is no NVIDIA runtime: Docker would refuse to create the container at
    all) and a CPU limit the host has (Docker rejects limits above its CPU count)."""
    cpus = int(compose.run("info", "--format", "{{.NCPU}}").stdout.strip())
    limit = min(float(_gpu_service()["deploy"]["resources"]["limits"]["cpus"]), cpus)
    override = tmp_path / "no-gpu-here.yml"
    override.write_text(
        "services:\n"
        "  mltag:\n"
        "    deploy:\n"
        "      resources:\n"
        f'        limits: {{cpus: "{limit:g}"}}\n'
        "        reservations:\n"
        "          devices: !reset []\n"
    )
    stack = make_stack(compose, "gpu", [COMPOSE_FILE, COMPOSE_GPU_FILE, override])
    try:
        yield stack
    finally:
        stack.down()


def test_compose_gpu_override_does_not_restart_a_refusal_forever(gpu_stack: Stack) -> None:
    policy = _gpu_service()["restart"]
    retries = _max_restarts(policy)
    gpu_stack("up", "--detach", "--no-build", "mltag")
    container = gpu_stack.container("mltag")
    engine = gpu_stack.engine
    info = engine.inspect("container", container)
    assert info["HostConfig"]["RestartPolicy"]["Name"] == policy.split(":")[0]
    # Docker's back-off doubles from 100 ms; each start takes a few seconds to refuse.
    info = engine.wait_state(
        container,
        lambda i: i["State"]["Status"] == "exited" and i["RestartCount"] >= retries,
        timeout_s=60 + 15 * retries,
        what=f"exited after {retries} restarts",
    )
    time.sleep(5)  # and it stays down
    info = engine.inspect("container", container)
    assert info["State"]["Status"] == "exited", info["State"]
    assert info["State"]["ExitCode"] == 2
    assert info["RestartCount"] == retries
    assert "cannot start" in engine.logs(container)
