"""The CPU image's command, run for real: same argv (ENTRYPOINT + CMD), same ENV."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import GPU_DOCKERFILE, REPO, ContainerService, container_env, free_port, png
from .dockerfile import parse_dockerfile, parse_healthcheck

pytestmark = pytest.mark.integration


def test_image_command_is_the_console_script(container_service: ContainerService) -> None:
    assert container_service.argv == ["mltag-serve"]


def test_container_command_tags_an_image(container_service: ContainerService) -> None:
    import httpx

    r = httpx.post(
        container_service.url + "/tag",
        files={"image": ("red.png", png((235, 15, 15)), "image/png")},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    (result,) = body["results"]
    assert result["error"] is None
    labels = [tag["label"] for tag in result["tags"]]
    assert labels, body
    assert labels[0] == "red", body


def test_container_serves_probe_and_metrics_endpoints(container_service: ContainerService) -> None:
    import httpx

    for path in ("/livez", "/readyz", "/metrics", "/labels"):
        assert httpx.get(container_service.url + path, timeout=5).status_code == 200, path


def test_container_logs_json(container_service: ContainerService) -> None:
    import json

    lines = [line for line in container_service.log().splitlines() if line.startswith("{")]
    assert lines, container_service.log()
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_healthcheck_script_passes_against_the_running_service(
    service_dockerfile, container_service: ContainerService
) -> None:
    """The image's HEALTHCHECK command (with /opt/mltag/ mapped to docker/) exits 0."""
    healthcheck = service_dockerfile.final.last("HEALTHCHECK")
    assert healthcheck is not None
    _, argv = parse_healthcheck(healthcheck.args)
    assert argv == ["python", "/opt/mltag/healthcheck.py"]
    script = REPO / "docker" / "healthcheck.py"
    result = subprocess.run(
        [sys.executable, str(script)],
        env=container_service.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_healthcheck_script_fails_when_nothing_listens(service_dockerfile) -> None:
    env = {"MLTAG_PORT": str(free_port()), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_gpu_image_command_refuses_to_run_without_a_gpu(demo_artifact_cli, tmp_path) -> None:
    """The GPU image's command and ENV on a machine without CUDA: a loud, early exit (2),
    never a silent fallback to CPU. (Where CUDA is available this test is moot.)"""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    gpu = parse_dockerfile(GPU_DOCKERFILE)
    env = container_env(
        gpu,
        {
            "MLTAG_ARTIFACT_DIR": str(demo_artifact_cli),
            "MLTAG_HOST": "127.0.0.1",
            "MLTAG_PORT": str(free_port()),
        },
    )
    result = subprocess.run(
        gpu.final.command(),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cuda" in result.stderr.lower()
