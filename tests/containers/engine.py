"""A thin layer over the docker and Compose v2 command-line clients, for the container tests.

Which client, which base images and which build settings come from the environment that
`.ci/docker.sh` prints (`bash .ci/docker.sh env`); without it, the first `docker` on PATH and
the Dockerfiles' own public base images are used:

  DOCKER_CLI                    a client that builds with BuildKit (>= 23 with buildx, or 20.10)
  DOCKER_COMPOSE                a Compose v2 binary (else `docker compose`, else `docker-compose`)
  DOCKER_BASE_PYTHON            --build-arg PYTHON_IMAGE  (service and train images)
  DOCKER_BASE_CUDA              --build-arg CUDA_IMAGE    (GPU image)
  DOCKER_BASE_BUSYBOX           --build-arg BUSYBOX_IMAGE (artifact image)
  PROMETHEUS_IMAGE              the compose file's Prometheus image
  DOCKER_BUILD_CA_BUNDLE        a PEM bundle passed as the build secret `ca_bundle`
  DOCKER_BUILD_PIP_INDEX_URL    --build-arg PIP_INDEX_URL
  DOCKER_BUILD_PIP_EXTRA_INDEX_URL  --build-arg PIP_EXTRA_INDEX_URL
  DOCKER_TESTS_REQUIRE_ENGINE   1: fail instead of skipping when no engine answers
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# The base-image build argument each Dockerfile takes, and the variable that overrides it.
BASE_ARGS = {
    "service.Dockerfile": ("PYTHON_IMAGE", "DOCKER_BASE_PYTHON"),
    "train.Dockerfile": ("PYTHON_IMAGE", "DOCKER_BASE_PYTHON"),
    "service-gpu.Dockerfile": ("CUDA_IMAGE", "DOCKER_BASE_CUDA"),
    "artifact.Dockerfile": ("BUSYBOX_IMAGE", "DOCKER_BASE_BUSYBOX"),
}
# Dockerfiles whose pip installs take the optional package index and CA bundle.
PIP_DOCKERFILES = {"service.Dockerfile", "train.Dockerfile", "service-gpu.Dockerfile"}


class EngineUnavailableError(Exception):
    """No Docker engine answers, or no client here can build with BuildKit."""


def _docker_major(cli: str) -> int | None:
    out = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.match(r"Docker version (\d+)\.", out)
    return int(m.group(1)) if m else None


def _can_build(cli: str) -> bool:
    """BuildKit without a registry: a client with the buildx plugin, or a pre-23 client (its
    BuildKit is built in). A 23+ client without buildx cannot build with BuildKit at all."""
    if subprocess.run([cli, "buildx", "version"], capture_output=True, check=False).returncode == 0:
        return True
    major = _docker_major(cli)
    return major is not None and major < 23


def find_cli() -> str:
    if os.environ.get("DOCKER_CLI"):
        return os.environ["DOCKER_CLI"]
    candidates: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / "docker"
        if path.is_file() and os.access(path, os.X_OK) and str(path) not in candidates:
            candidates.append(str(path))
    for cli in candidates:
        if _can_build(cli):
            return cli
    if candidates:
        raise EngineUnavailableError(
            f"no docker client here builds with BuildKit ({', '.join(candidates)}: 23+ without "
            "the buildx plugin); install buildx, or Debian's docker.io (.ci/docker.sh does)"
        )
    raise EngineUnavailableError("no `docker` client on PATH")


def find_compose(cli: str) -> list[str] | None:
    """The Compose v2 command, or None (Compose v1 cannot read the compose file's `name:`)."""
    options: list[list[str]] = []
    if os.environ.get("DOCKER_COMPOSE"):
        options.append([os.environ["DOCKER_COMPOSE"]])
    options.append([cli, "compose"])
    if shutil.which("docker-compose"):
        options.append(["docker-compose"])
    for argv in options:
        try:
            out = subprocess.run(
                [*argv, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if out.returncode == 0 and re.search(r"\bv?2\.\d+", out.stdout):
            return argv
    return None


@dataclass
class Build:
    tag: str
    seconds: float
    size_bytes: int


@dataclass
class Engine:
    cli: str
    compose_argv: list[str] | None
    builds: list[Build] = field(default_factory=list)

    @classmethod
    def connect(cls) -> Engine:
        cli = find_cli()
        version = subprocess.run(
            [cli, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if version.returncode != 0:
            reason = " ".join(version.stderr.split())[:300]
            raise EngineUnavailableError(
                f"no Docker engine answers `{cli} version` ({reason}); `make test-docker` "
                "installs and starts one where it can (root, apt)"
            )
        return cls(cli, find_compose(cli))

    # ---- plain commands ------------------------------------------------------------------
    def run(
        self, *args: str, check: bool = True, timeout: float = 120, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cli, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`docker {' '.join(args)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.run(kind, "inspect", name).stdout)
        return data[0]

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.inspect("image", tag)["Size"])

    def logs(self, container: str) -> str:
        result = self.run("logs", container, check=False)
        return result.stdout + result.stderr

    def remove(self, *containers: str) -> None:
        if containers:
            self.run("rm", "--force", "--volumes", *containers, check=False)

    def container_ip(self, container: str) -> str:
        networks = self.inspect("container", container)["NetworkSettings"]["Networks"]
        (network,) = networks.values()
        ip: str = network["IPAddress"]
        assert ip, f"{container} has no IP address"
        return ip

    def wait_state(
        self, container: str, predicate: Any, timeout_s: float, what: str
    ) -> dict[str, Any]:
        """Poll `docker inspect` until predicate(state dict) holds; fail with the logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.inspect("container", container)
            if predicate(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{container}: not {what} after {timeout_s:.0f} s; state "
                    f"{json.dumps(info['State'])[:800]}\nlogs:\n{self.logs(container)[-4000:]}"
                )
            time.sleep(0.5)

    # ---- builds --------------------------------------------------------------------------
    def build(
        self,
        dockerfile: str,
        tag: str,
        build_args: dict[str, str] | None = None,
        timeout_s: float = 1200,
    ) -> Build:
        """`docker build` from the repository root with BuildKit, with the base image and the
        package index / CA bundle settings from the environment. Fails with the build log."""
        name = Path(dockerfile).name
        args = dict(build_args or {})
        base_arg, base_env = BASE_ARGS[name]
        if os.environ.get(base_env):
            args.setdefault(base_arg, os.environ[base_env])
        argv = [self.cli, "build", "--progress=plain", "-f", dockerfile, "-t", tag]
        if name in PIP_DOCKERFILES:
            for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
                if os.environ.get(f"DOCKER_BUILD_{arg}"):
                    args.setdefault(arg, os.environ[f"DOCKER_BUILD_{arg}"])
            bundle = os.environ.get("DOCKER_BUILD_CA_BUNDLE")
            if bundle:
                argv += ["--secret", f"id=ca_bundle,src={bundle}"]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(".")
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        t0 = time.monotonic()
        result = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        seconds = time.monotonic() - t0
        if result.returncode != 0:
            raise AssertionError(
                f"building {tag} from {dockerfile} failed ({result.returncode}):\n"
                f"{' '.join(argv)}\n{result.stderr[-6000:]}"
            )
        build = Build(tag, seconds, self.image_size(tag))
        self.builds.append(build)
        return build

    # ---- compose -------------------------------------------------------------------------
    def compose(
        self,
        project: str,
        files: list[Path],
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        assert self.compose_argv is not None
        argv = [*self.compose_argv, "--project-name", project, "--project-directory", str(REPO)]
        for f in files:
            argv += ["--file", str(f)]
        argv += list(args)
        # The compose file interpolates ${MLTAG_ARTIFACT_DIR:-...}: a developer's own MLTAG_*
        # variables must not leak into the tests' projects.
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLTAG_")}
        result = subprocess.run(
            argv,
            cwd=REPO,
            env=base | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}"
            )
        return result

    def compose_container(self, project: str, service: str) -> str:
        """The container name of a compose service (one replica)."""
        out = self.run(
            "ps",
            "--all",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).stdout.split()
        assert len(out) == 1, f"{project}/{service}: containers {out}"
        return out[0]
