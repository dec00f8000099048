"""The command as a user runs it on a laptop: no --address, so it starts (and stops) its own
local Ray; progress while it runs, one summary line at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import DEFAULT_MODEL, gradient_png, ray_env, read_rows

pytestmark = pytest.mark.integration


def command() -> list[str]:
    script = Path(sys.executable).parent / "mltag-batch"  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "mltag_batch"]


def test_one_command_on_this_machine(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [*command(), "--artifact", str(DEFAULT_MODEL), "--input", str(collection / "sub"),
            "--output", str(out), "--format", "jsonl", "--shard-size", "1"]  # fmt: skip
    r = subprocess.run(argv, env=ray_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mltag-batch: 3 to tag (0 already in" in r.stderr
    assert "mltag-batch: 3/3 images (100%), 0 errors" in r.stderr  # the progress count
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("mltag-batch: 3 images: 3 tagged, 0 errors; this run 3 in")
    assert "img/s, Ray startup" in last
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == ["deeper/alpha.png", "grey16.png", "rotated.jpg"]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["this_run"]["ray_startup_s"] > 0  # it started its own Ray
    assert summary["shards"] == 3


@pytest.mark.slow
def test_killed_with_its_own_ray_then_resumed(tmp_path: Path) -> None:
    """SIGKILL the command (its local Ray goes with it), then rerun: one row per input."""
    images = tmp_path / "images"
    images.mkdir()
    data = gradient_png(1500)
    ids = [f"{i:03d}.png" for i in range(60)]
    for name in ids:
        (images / name).write_bytes(data)
    out = tmp_path / "out"
    argv = [*command(), "--artifact", str(DEFAULT_MODEL), "--input", str(images),
            "--output", str(out), "--shard-size", "4", "--concurrency", "1", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(argv, env=ray_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("part-*")) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        proc.wait()
        time.sleep(2.0)
        first = sorted(out.glob("part-*"))
        assert 0 < len(first) < len(ids) // 4, "the run was not caught part-way"
        rerun = subprocess.run(argv, env=ray_env(), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of ours left in its session
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == ids
    assert set(first) <= set(out.glob("part-*"))
