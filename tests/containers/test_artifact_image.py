"""docker/artifact.Dockerfile delivering a model the way k8s/components/artifact-from-image
does, emulated with Docker: the artifact image runs as the init container (its command,
user and security settings from the manifests) and copies the model into a shared volume
(the pod's emptyDir); the service image then serves it from there, read-only.

The delivered model is the colour demo artifact, not the one baked into mltag:cpu, so the
test can tell which one is served."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from .conftest import RUN_ID, VENV_BIN, free_port, wait_ready
from .engine import REPO, Engine

pytestmark = pytest.mark.docker

COMPONENT = REPO / "k8s" / "components" / "artifact-from-image"
DEMO_ARTIFACT = "build/demo-artifact"  # in the build context (.dockerignore lets it in)


def _yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(scope="module")
def demo_artifact_image(engine: Engine) -> str:
    """The artifact image holding the colour demo model (`mltag-train demo-artifact`, as
    `make demo-artifact` writes it)."""
    out = REPO / DEMO_ARTIFACT
    if not (out / "manifest.json").is_file():
        result = subprocess.run(
            [str(VENV_BIN / "mltag-train"), "demo-artifact", "--output", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    tag = "mltag-artifact:test"
    engine.build("docker/artifact.Dockerfile", tag, {"ARTIFACT": DEMO_ARTIFACT})
    return tag


@pytest.fixture
def models_volume(engine: Engine) -> Iterator[str]:
    name = f"{RUN_ID}-models"
    engine.run("volume", "create", name)
    try:
        yield name
    finally:
        engine.run("volume", "rm", "--force", name, check=False)


def _pod() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str]]:
    """(pod securityContext, initContainer, service container patch, ConfigMap literals)."""
    base = _yaml(REPO / "k8s" / "base" / "deployment.yaml")["spec"]["template"]["spec"]
    patch = _yaml(COMPONENT / "deployment.yaml")["spec"]["template"]["spec"]
    (init,) = patch["initContainers"]
    (service,) = patch["containers"]
    (generator,) = _yaml(COMPONENT / "kustomization.yaml")["configMapGenerator"]
    literals = dict(item.split("=", 1) for item in generator["literals"])
    return base["securityContext"], init, service, literals


def test_image_holds_only_the_artifact(engine: Engine, demo_artifact_image: str) -> None:
    config = engine.inspect("image", demo_artifact_image)["Config"]
    assert config["User"] == "10001:10001"
    r = engine.run("run", "--rm", "--entrypoint", "ls", demo_artifact_image, "/artifact")
    assert sorted(r.stdout.split()) == sorted(p.name for p in (REPO / DEMO_ARTIFACT).iterdir())
    # busybox + the model, nothing else
    model = sum(p.stat().st_size for p in (REPO / DEMO_ARTIFACT).iterdir())
    assert engine.image_size(demo_artifact_image) < model + 20e6


def test_init_container_delivers_the_model_to_the_service(
    engine: Engine, cpu_image: str, demo_artifact_image: str, models_volume: str
) -> None:
    pod, init, service, literals = _pod()
    (init_mount,) = init["volumeMounts"]
    (service_mount,) = service["volumeMounts"]
    assert service_mount["readOnly"] is True
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    user = f"{pod['runAsUser']}:{pod['runAsGroup']}"

    # The emptyDir: world-writable, group-owned by the pod's fsGroup (as the kubelet makes it).
    engine.run(
        "run", "--rm", "--user", "0", "--entrypoint", "sh",
        "-v", f"{models_volume}:{init_mount['mountPath']}", demo_artifact_image,
        "-c", f"chgrp {pod['fsGroup']} {init_mount['mountPath']} && "
              f"chmod 2777 {init_mount['mountPath']}",
    )  # fmt: skip
    # The init container, with the manifest's command and security settings.
    engine.run(
        "run", "--rm", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", user,
        "--group-add", str(pod["fsGroup"]),
        "-v", f"{models_volume}:{init_mount['mountPath']}",
        "--entrypoint", init["command"][0], demo_artifact_image, *init["command"][1:],
    )  # fmt: skip
    # The service, reading the model from the volume (MLTAG_ARTIFACT_DIR from the ConfigMap).
    port = free_port()
    container = f"{RUN_ID}-from-artifact-image"
    engine.run(
        "run", "--detach", "--name", container, "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", user,
        "-v", f"{models_volume}:{service_mount['mountPath']}:ro",
        "-e", f"MLTAG_ARTIFACT_DIR={literals['MLTAG_ARTIFACT_DIR']}",
        "-p", f"127.0.0.1:{port}:8000", cpu_image,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 120, describe=lambda: engine.logs(container))
        manifest = json.loads((REPO / DEMO_ARTIFACT / "manifest.json").read_text())
        model = httpx.get(url + "/labels", timeout=5).json()["model"]
        assert (model["name"], model["version"]) == (manifest["name"], manifest["version"])
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (230, 20, 20)).save(buf, format="PNG")
        r = httpx.post(url + "/tag", files={"image": ("red.png", buf.getvalue())}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["tags"][0]["label"] == "red", r.json()
    finally:
        engine.remove(container)
