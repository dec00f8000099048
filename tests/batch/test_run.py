"""Whole runs on a real local Ray (one per module, 2 CPUs, loopback): rows equal the
service's answers, bad inputs are rows, every manifest format, both output formats read with
pyarrow, and resuming, including after the driver is killed part-way."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltag_batch.job import JobConfig, execute, prepare, ray_session
from mltag_batch.summary import Summary
from mltag_batch.tagging import TagOptions

from .conftest import (
    DEFAULT_MODEL,
    MAX_PIXELS,
    RAY_ENV,
    ServiceTag,
    collection_files,
    gradient_png,
    ray_env,
    read_rows,
    scores_dict,
    write_manifest,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray for this module's runs; yields its address for other drivers."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(
    source: Path, output: Path, fmt: str = "parquet", provider: str = "cpu", **options: Any
) -> Summary:
    config = JobConfig(
        provider=provider,
        artifact=DEFAULT_MODEL,
        source=str(source),
        output=str(output),
        fmt=fmt,
        options=TagOptions(max_pixels=MAX_PIXELS, **options),
        batch_size=4,
        shard_size=4,
    )
    plan = prepare(config)
    with ray_session(None) as startup_s:
        return execute(plan, startup_s)


def one_row_per_id(rows: list[dict[str, Any]], ids: list[str]) -> None:
    counts = Counter(r["id"] for r in rows)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}, [i for i, n in counts.items() if n > 1]


def test_rows_equal_the_service_and_bad_inputs_are_rows(
    ray_cluster: str, collection: Path, service_tag: ServiceTag, tmp_path: Path
) -> None:
    names = list(collection_files())
    listed = [{"path": str(collection / n), "id": n} for n in names]
    listed += [{"path": str(collection / "missing.png"), "id": "missing.png"},
               {"path": str(collection / "sub"), "id": "a directory"}]  # fmt: skip
    manifest = write_manifest(tmp_path / "inputs.jsonl", listed)
    summary = run(manifest, tmp_path / "out", all_scores=True)

    rows = read_rows(tmp_path / "out")  # Parquet, with pyarrow
    one_row_per_id(rows, [r["id"] for r in listed])
    by_id = {r["id"]: r for r in rows}
    for name in names:
        expected = service_tag(name, {"all_scores": "true"})
        row = by_id[name]
        assert row["error"] == expected["error"], name
        assert row["tags"] == expected["tags"], name
        assert scores_dict(row["scores"]) == expected.get("scores"), name
        assert row["path"] == str(collection / name)
    assert by_id["missing.png"]["error"]["code"] == "not_found"
    assert by_id["a directory"]["error"]["code"] == "read_error"
    assert {r["model"]["name"] for r in rows} == {"mltag-openclipart"}

    assert summary.total == len(listed) and summary.missing == 0
    assert summary.errors_by_code == {
        "empty_image": 1,
        "image_too_large": 1,
        "invalid_image": 2,
        "not_found": 1,
        "read_error": 1,
        "unsupported_format": 1,
    }
    assert summary.tagged == len(listed) - 7
    written = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert written["total"] == summary.total and written["this_run"]["processed"] == len(listed)


@pytest.mark.parametrize("manifest_suffix", [".csv", ".parquet"])
def test_jsonl_output_from_a_manifest_with_ids(
    ray_cluster: str, collection: Path, tmp_path: Path, manifest_suffix: str
) -> None:
    listed = [{"id": f"img-{i:03d}", "path": n} for i, n in enumerate(["red.png", "photo.jpg"])]
    manifest = write_manifest(collection / f"few{manifest_suffix}", listed)  # relative paths
    summary = run(manifest, tmp_path / "out", fmt="jsonl", top_k=2)
    rows = read_rows(tmp_path / "out")  # JSONL, with pyarrow
    one_row_per_id(rows, ["img-000", "img-001"])
    assert all(r["error"] is None and len(r["tags"]) <= 2 for r in rows)
    assert summary.format == "jsonl" and summary.tagged == 2


def test_a_rerun_tags_only_what_is_missing(
    ray_cluster: str, collection: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run(collection, out)  # a directory, recursively
    ids = list(collection_files())
    assert first.this_run["processed"] == len(ids) and first.total == len(ids)
    shards = sorted(out.glob("part-*.parquet"))
    assert len(shards) == -(-len(ids) // 4)

    again = run(collection, out)
    assert again.this_run["processed"] == 0
    assert sorted(out.glob("part-*.parquet")) == shards
    assert (again.tagged, again.errors) == (first.tagged, first.errors)

    lost = shards[1]
    lost_rows = len(read_rows_of(lost))
    lost.unlink()
    third = run(collection, out)
    assert third.this_run["processed"] == lost_rows
    one_row_per_id(read_rows(out), ids)


def read_rows_of(shard: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(shard).to_pylist()
    return rows


def test_other_settings_into_the_same_output_are_refused(
    ray_cluster: str, collection: Path, tmp_path: Path
) -> None:
    from mltag_batch.sinks import OutputError

    run(collection / "sub", tmp_path / "out")
    with pytest.raises(OutputError, match="options"):
        run(collection / "sub", tmp_path / "out", min_score=0.1)


def test_killed_part_way_then_resumed(ray_cluster: str, tmp_path: Path) -> None:
    """SIGKILL the driver once its first shards are out, rerun the same command: every input
    gets exactly one row, and the first run's shards are kept."""
    images = tmp_path / "images"
    images.mkdir()
    data = gradient_png(1500)  # ~0.1 s to decode: the run lasts a few seconds
    ids = [f"{i:03d}.png" for i in range(60)]
    for name in ids:
        (images / name).write_bytes(data)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mltag_batch", "--artifact", str(DEFAULT_MODEL),
            "--input", str(images), "--output", str(out), "--address", ray_cluster,
            "--shard-size", "4", "--batch-size", "4", "--concurrency", "1", "--quiet"]  # fmt: skip

    proc = subprocess.Popen(argv, env=ray_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # let Ray reap the dead driver's actor
    before = sorted(out.glob("part-*.parquet"))
    rows_before = sum(len(read_rows_of(s)) for s in before)
    assert 0 < rows_before < len(ids), "the run was not caught part-way"

    rerun = subprocess.run(argv, env=ray_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    one_row_per_id(read_rows(out), ids)
    assert set(before) <= set(out.glob("part-*.parquet"))  # kept, not redone
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["this_run"]["processed"] == len(ids) - rows_before
    assert (summary["total"], summary["tagged"], summary["missing"]) == (len(ids), len(ids), 0)
    assert not list(out.glob(".tmp-*"))
    assert f"{len(ids)} images: {len(ids)} tagged, 0 errors" in rerun.stdout


def test_a_failed_run_says_so_in_its_summary(
    ray_cluster: str, collection: Path, tmp_path: Path
) -> None:
    """Actors that cannot start (a GPU provider on a machine without one) fail the run: the
    error reaches the caller and `_summary.json` says failed, with nothing tagged."""
    with pytest.raises(Exception, match="cuda"):
        run(collection / "sub", tmp_path / "out", provider="cuda")
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["status"] == "failed" and "cuda" in summary["error"]
    assert (summary["missing"], summary["this_run"]["processed"]) == (3, 0)


@pytest.mark.slow
def test_over_ray_client(ray_cluster: str, collection: Path, tmp_path: Path) -> None:
    """`--address ray://...`: Ray Data cannot run in a Ray Client driver, so the command runs
    the whole job as a task on the cluster; errors still map to exit codes."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ray.util.client.server", f"--address={ray_cluster}",
         "--host=127.0.0.1", f"--port={port}", "--mode=proxy"],
        env=ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {**ray_env(), "RAY_AUTH_MODE": "token"}  # the client must send the cluster's token
    base = [sys.executable, "-m", "mltag_batch", "--artifact", str(DEFAULT_MODEL),
            "--address", f"ray://127.0.0.1:{port}", "--max-pixels", str(MAX_PIXELS)]  # fmt: skip
    try:
        time.sleep(3)  # the proxy is up
        argv = [*base, "--input", str(collection / "sub"), "--output", str(tmp_path / "out")]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "3 images: 3 tagged, 0 errors" in r.stdout
        one_row_per_id(
            read_rows(tmp_path / "out"), ["deeper/alpha.png", "grey16.png", "rotated.jpg"]
        )
        missing = [*base, "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")]
        r = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "does not exist" in r.stderr
    finally:
        for pid in reversed(descendants(server.pid)):  # the proxy and the servers it started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def descendants(root: int) -> list[int]:
    """`root` and every process below it (ours to end, by id)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
