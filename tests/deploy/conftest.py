"""Fixtures for the deployment checks: repository paths, the external validators, and the
service started exactly as the CPU container starts it (its ENTRYPOINT, CMD and ENV)."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .dockerfile import Dockerfile, parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = REPO / "k8s"
DEPLOY = REPO / "deploy"
SERVICE_DOCKERFILE = DOCKER / "service.Dockerfile"
GPU_DOCKERFILE = DOCKER / "service-gpu.Dockerfile"
TRAIN_DOCKERFILE = DOCKER / "train.Dockerfile"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
VENV_BIN = Path(sys.executable).parent

# The ENV keys the test changes from the image's, and why: the artifact is baked at
# /opt/mltag/model in the image (here: a fresh demo artifact), the container binds 0.0.0.0
# inside its own network namespace (here: loopback only), on a port that may be taken here.
ENV_OVERRIDDEN = frozenset({"MLTAG_ARTIFACT_DIR", "MLTAG_HOST", "MLTAG_PORT"})


def find_tool(name: str, hint: str) -> str:
    """An external validator: next to this interpreter (pip-installed dev tools) or on PATH.
    Missing: a skip on a workstation, a failure under CI (.ci/system-deps.sh installs it)."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"`{name}` not found; {hint}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_tool(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def require_service() -> None:
    """Skip (only) while the service package cannot be imported yet."""
    try:
        importlib.import_module("service.cli")
        importlib.import_module("service.settings")
    except ImportError as exc:
        pytest.skip(f"the service package is not importable yet: {exc}")


@pytest.fixture(scope="session")
def service_dockerfile() -> Dockerfile:
    return parse_dockerfile(SERVICE_DOCKERFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def png(rgb: tuple[int, int, int], size: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def demo_artifact_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo artifact, built by the command the docs and the image build use."""
    require_service()
    out = tmp_path_factory.mktemp("deploy-artifact") / "demo"
    result = run_tool([str(VENV_BIN / "mltag-train"), "demo-artifact", "--output", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "manifest.json").is_file()
    return out


def container_env(dockerfile: Dockerfile, overrides: dict[str, str]) -> dict[str, str]:
    """The image's ENV on top of this machine's (minus any MLTAG_* of the developer's), with
    the image's venv (/opt/venv/bin) played by this interpreter's."""
    assert set(overrides) <= ENV_OVERRIDDEN, set(overrides) - ENV_OVERRIDDEN
    image_env = dockerfile.final.env()
    assert image_env["PATH"].startswith("/opt/venv/bin:"), image_env["PATH"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTAG_")}
    env.update({k: v for k, v in image_env.items() if k != "PATH"})
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(overrides)
    return env


@dataclass
class ContainerService:
    url: str
    env: dict[str, str]
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def container_service(
    service_dockerfile: Dockerfile,
    demo_artifact_cli: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ContainerService]:
    """`mltag-serve` run with the CPU image's ENTRYPOINT + CMD and ENV, from an empty working
    directory (the image's WORKDIR holds nothing the service reads)."""
    import httpx

    argv = service_dockerfile.final.command()
    assert argv, "the service image has no ENTRYPOINT/CMD"
    port = free_port()
    env = container_env(
        service_dockerfile,
        {
            "MLTAG_ARTIFACT_DIR": str(demo_artifact_cli),
            "MLTAG_HOST": "127.0.0.1",
            "MLTAG_PORT": str(port),
        },
    )
    workdir = tmp_path_factory.mktemp("workdir")
    log_path = workdir.parent / f"container-service-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    service = ContainerService(f"http://127.0.0.1:{port}", env, argv, proc, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`{' '.join(argv)}` exited with {proc.returncode}:\n{service.log()}")
            try:
                if httpx.get(service.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`{' '.join(argv)}` not ready after 30 s:\n{service.log()}")
            time.sleep(0.05)
        yield service
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # as `docker stop` / the kubelet do
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def live_metrics(container_service: ContainerService) -> dict[str, set[str]]:
    """A live /metrics scrape after one tagged image: sample name -> its label names."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.post(
        container_service.url + "/tag",
        files={"image": ("red.png", png((230, 20, 20)), "image/png")},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    text = httpx.get(container_service.url + "/metrics", timeout=5).text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples
