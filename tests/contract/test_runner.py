"""Execution provider choice and core counting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltag_artifact.runner import ModelLoadError, _cgroup_cpu_limit, choose_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ("auto", [CPU], [CPU]),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("cuda", [TRT, CUDA, CPU], [CUDA, CPU]),
        ("tensorrt", [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
    ],
)
def test_provider_choice(requested: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(requested, False, available) == expected


def test_gpu_requests_fail_loudly_without_gpu() -> None:
    with pytest.raises(ModelLoadError, match="provider 'cuda' requested"):
        choose_providers("cuda", False, [CPU])
    with pytest.raises(ModelLoadError, match="require_gpu is set"):
        choose_providers("auto", True, [CPU])


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000", 2.0), ("junk", None)],
)
def test_cgroup_quota(tmp_path: Path, content: str, expected: float | None) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(content)
    assert _cgroup_cpu_limit(f) == expected
    assert _cgroup_cpu_limit(tmp_path / "missing") is None
