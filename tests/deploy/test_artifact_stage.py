"""The service images' `artifact` stage, run with sh: bake ARTIFACT when it holds a
manifest, else build the demo model when DEMO_FALLBACK=1, else fail the build loudly.
(The RUN script comes from the Dockerfile; only the image paths are mapped onto this
machine, and its `pip install onnx` is skipped: onnx is already in the dev extra.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, SERVICE_DOCKERFILE, VENV_BIN, require_service
from .dockerfile import parse_dockerfile

pytestmark = pytest.mark.integration


def _script(context: Path, out: Path, blockers: Path) -> str:
    stage = next(s for s in parse_dockerfile(SERVICE_DOCKERFILE).stages if s.name == "artifact")
    (run,) = stage.all("RUN")
    mounts = "--mount=type=bind,target=/ctx --mount=type=secret,id=ca_bundle "
    assert run.args.startswith(mounts)
    script = run.args.removeprefix(mounts)
    pip_install = "/opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt onnx"
    assert pip_install in script
    mapping = {
        pip_install: "true",
        "/ctx/": f"{context}/",
        "/artifact": str(out),
        # The service image has no torch: make importing it fail here too.
        "PYTHONPATH=/src": f"PYTHONPATH={blockers}:{REPO}",
        "/opt/venv/bin/": f"{VENV_BIN}/",
    }
    pattern = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    return re.sub(pattern, lambda m: mapping[m.group(0)], script)


def _run(
    tmp_path: Path, artifact: str, fallback: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "baked"
    blockers = tmp_path / "blockers"
    for module in ("torch", "timm", "torchvision"):
        (blockers / module).mkdir(parents=True)
        (blockers / module / "__init__.py").write_text(
            f"raise ImportError('{module} is not installed in the service image')\n"
        )
    env = {"ARTIFACT": artifact, "DEMO_FALLBACK": fallback, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["sh", "-c", _script(tmp_path / "context", out, blockers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, out


def test_bakes_the_given_artifact(tmp_path: Path) -> None:
    source = tmp_path / "context" / "models" / "default"
    source.mkdir(parents=True)
    for name in ("model.onnx", "manifest.json", "MODEL_CARD.md"):
        (source / name).write_text(name)
    result, out = _run(tmp_path, "models/default", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "manifest.json", "model.onnx"]


def test_fails_without_an_artifact_unless_asked_to_fall_back(tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    result, out = _run(tmp_path, "models/default", "0")
    assert result.returncode != 0
    assert "no artifact at models/default" in result.stderr
    assert not out.exists()


def test_falls_back_to_the_demo_model(tmp_path: Path) -> None:
    require_service()
    (tmp_path / "context").mkdir()
    result, out = _run(tmp_path, "models/default", "1")
    assert result.returncode == 0, result.stderr
    assert "baking the colour demo model" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "colour-demo"
    assert (out / "model.onnx").is_file()
