"""The architecture's boundary, read from the import graph: training and serving meet only
through the artifact contract (`mltag_artifact`), which imports neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "model_training": {"service"},
    "service": {"model_training", "torch", "torchvision", "timm"},
    "mltag_artifact": {"service", "model_training", "torch", "torchvision", "timm"},
    "mltag_batch": {"service", "model_training", "torch", "torchvision", "timm"},
}


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, anywhere in it (also inside functions), relative imports
    resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = path.relative_to(REPO).with_suffix("").parts
    here = list(parts[:-1])  # the package a module (or __init__) belongs to
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    assert parts[0] == package
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in imported_modules(path, package):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_on_its_side(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_relative_and_local_imports(tmp_path: Path) -> None:
    """The checker is not vacuous: relative, aliased and function-local imports are resolved."""
    sample = REPO / "service" / "api" / "tag.py"
    found = imported_modules(sample, "service")
    assert "service.api.pipeline" in found  # `from .pipeline import ...`
    assert "mltag_artifact.preprocess" in found
    cli = imported_modules(REPO / "service" / "cli.py", "service")
    assert "uvicorn" in cli  # imported inside a function


def test_importing_the_service_loads_no_training_code() -> None:
    code = (
        "import sys, service.app, service.cli;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'model_training', 'torch', 'timm', 'torchvision'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_manifest_alone_needs_only_pydantic() -> None:
    """`import mltag_artifact` (manifest + artifact I/O) pulls no numpy, Pillow or ONNX Runtime:
    tools that only read or write manifests stay light."""
    code = (
        "import sys, mltag_artifact;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'PIL', 'onnxruntime'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
