"""Fixtures for the container tests: the engine, the images built from docker/, the service
brought up by `docker compose` with the project's compose file, and the same model served
in-process (`mltag-serve` from this virtualenv) as the reference.

Every test here is marked `docker`; they skip, saying why, where no Docker engine answers
(and fail instead under `.ci/docker.sh`, which sets DOCKER_TESTS_REQUIRE_ENGINE=1)."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .engine import REPO, Engine, EngineUnavailableError

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_GPU_FILE = REPO / "docker-compose.gpu.yml"
CLIPART = sorted((REPO / "tests" / "data" / "clipart").glob("*.png"))
VENV_BIN = Path(sys.executable).parent
# A unique prefix for what the tests create, so they never touch a developer's containers.
RUN_ID = f"mltag-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _unavailable(message: str) -> None:
    if os.environ.get("DOCKER_TESTS_REQUIRE_ENGINE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def load_compose(*paths: Path) -> dict[str, Any]:
    """The compose files merged as Compose merges what these files use (mappings merge)."""

    def merge(base: Any, override: Any) -> Any:
        if isinstance(base, dict) and isinstance(override, dict):
            return {k: merge(base[k], v) if k in base else v for k, v in override.items()} | {
                k: v for k, v in base.items() if k not in override
            }
        return override

    merged: dict[str, Any] = {}
    for path in paths or (COMPOSE_FILE,):
        merged = merge(merged, yaml.safe_load(path.read_text()))
    return merged


def compose_default(value: str) -> str:
    """`${VAR:-default}` -> default (what Compose uses with VAR unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, timeout_s: float, alive: Any = None, describe: Any = None) -> None:
    """GET url/readyz until 200; `alive()` False or the deadline -> fail with describe()."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if (alive is not None and not alive()) or time.monotonic() > deadline:
            detail = describe() if describe else ""
            pytest.fail(f"{url} not ready after {timeout_s:.0f} s\n{detail}")
        time.sleep(0.2)


# ---- engine and images ------------------------------------------------------------------

_engines: list[Engine] = []  # for the build summary at the end of the run


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        connected = Engine.connect()
    except EngineUnavailableError as exc:
        _unavailable(str(exc))
        raise  # not reached: skip and fail raise
    _engines.append(connected)
    return connected


@pytest.fixture(scope="session")
def compose(engine: Engine) -> Engine:
    if engine.compose_argv is None:
        _unavailable(
            "no Compose v2 here (`docker compose`, or DOCKER_COMPOSE=<binary>; Compose v1 "
            "cannot read the compose file's top-level `name:`); .ci/docker.sh fetches it"
        )
    return engine


def _compose_build_args(service: dict[str, Any]) -> dict[str, str]:
    return {k: compose_default(str(v)) for k, v in service["build"].get("args", {}).items()}


@pytest.fixture(scope="session")
def cpu_image(engine: Engine) -> str:
    """mltag:cpu built as `docker compose build` would (the compose file's build args)."""
    mltag = load_compose()["services"]["mltag"]
    assert mltag["image"] == "mltag:cpu"
    engine.build(mltag["build"]["dockerfile"], "mltag:cpu", _compose_build_args(mltag))
    return "mltag:cpu"


@pytest.fixture(scope="session")
def gpu_image(engine: Engine) -> str:
    """mltag:gpu as the GPU override builds it (on a CPU-only stand-in base where no registry
    is reachable: the CUDA libraries are then missing, as on a host with a broken driver)."""
    mltag = load_compose(COMPOSE_FILE, COMPOSE_GPU_FILE)["services"]["mltag"]
    assert mltag["image"] == "mltag:gpu"
    engine.build(mltag["build"]["dockerfile"], "mltag:gpu", _compose_build_args(mltag))
    return "mltag:gpu"


# ---- the service under compose ------------------------------------------------------------


@dataclass
class Stack:
    """A compose project of the project's compose file, on free host ports."""

    engine: Engine
    project: str
    env: dict[str, str]
    files: list[Path]

    def __call__(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.engine.compose(self.project, self.files, *args, env=self.env, **kwargs)

    def container(self, service: str) -> str:
        return self.engine.compose_container(self.project, service)

    def logs(self) -> str:
        result = self("logs", "--no-color", check=False)
        return result.stdout[-6000:] + result.stderr[-2000:]

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def make_stack(engine: Engine, name: str, files: list[Path] | None = None) -> Stack:
    env = {
        "SERVICE_PUBLISH_PORT": str(free_port()),
        "PROMETHEUS_PUBLISH_PORT": str(free_port()),
        "GRAFANA_PUBLISH_PORT": str(free_port()),
    }
    return Stack(engine, f"{RUN_ID}-{name}", env, files or [COMPOSE_FILE])


@dataclass
class Service:
    url: str  # through the published port, as a user reaches it
    container: str
    stack: Stack


@pytest.fixture(scope="session")
def stack(compose: Engine, cpu_image: str) -> Iterator[Stack]:
    s = make_stack(compose, "stack")
    try:
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def service(stack: Stack) -> Service:
    """`docker compose up -d mltag` with the project's compose file (mltag:cpu already built:
    Compose uses it as it is). Waits for /readyz through the published port."""
    stack("up", "--detach", "--no-build", "mltag")
    container = stack.container("mltag")
    url = f"http://127.0.0.1:{stack.env['SERVICE_PUBLISH_PORT']}"

    def running() -> bool:
        state = stack.engine.inspect("container", container)["State"]
        return state["Status"] in ("running", "created")

    wait_ready(url, 120, running, stack.logs)
    return Service(url, container, stack)


# ---- the reference: the same model in-process ------------------------------------------------


@dataclass
class Reference:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """`mltag-serve` from this virtualenv serving the artifact the image bakes."""
    artifact = compose_default(load_compose()["services"]["mltag"]["build"]["args"]["ARTIFACT"])
    assert (REPO / artifact / "manifest.json").is_file(), f"no {artifact} in the repository"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTAG_")}
    env |= {
        "MLTAG_ARTIFACT_DIR": str(REPO / artifact),
        "MLTAG_HOST": "127.0.0.1",
        "MLTAG_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("reference") / "mltag-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mltag-serve")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 60, lambda: proc.poll() is None, log.read_text)
        yield Reference(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---- images to send ------------------------------------------------------------------------


def noise_png(size: int = 1100, seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, so well over 1 MB (multipart spools it to /tmp)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_of(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tag(url: str, images: list[tuple[str, bytes]], **params: str) -> dict[str, Any]:
    files = [("image", (name, data, "application/octet-stream")) for name, data in images]
    r = httpx.post(url + "/tag", files=files, params=params, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# ---- build times and sizes in the test summary -------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    builds = [b for e in _engines for b in e.builds]
    if not builds:
        return
    terminalreporter.section("container images built")
    for b in builds:
        terminalreporter.write_line(
            f"{b.tag:24} {b.seconds:6.1f} s  {b.size_bytes / 1e6:7.0f} MB (uncompressed)"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here must carry the `docker` marker: `make test` leaves them out by it."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and not item.get_closest_marker("docker"):
            raise pytest.UsageError(f"{item.nodeid}: container tests must be marked `docker`")
