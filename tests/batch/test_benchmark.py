"""benchmarks/batch.py still runs end to end (a few generated images, one round): numbers are
not checked here, only that every table is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import BLUE, GREEN, RED, solid

from .conftest import REPO, ray_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_the_batch_benchmark_prints_its_tables(tmp_path: Path) -> None:
    for i, colour in enumerate([RED, GREEN, BLUE] * 4):
        (tmp_path / f"{i:02d}.png").write_bytes(solid(colour, size=(64 + i, 48)))
    argv = [sys.executable, "benchmarks/batch.py", "--images-dir", str(tmp_path),
            "--rounds", "1", "--variants", "1x1", "--batch", "4"]  # fmt: skip
    r = subprocess.run(argv, cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "# 12 PNGs" in r.stdout
    for title in ("## mltag-batch vs the ideal pipeline", "## Startup, wall time, memory",
                  "## Inside the tagging actors"):  # fmt: skip
        assert title in r.stdout
    assert "| mltag-batch 1x1 |" in r.stdout and "| 1 |" in r.stdout
