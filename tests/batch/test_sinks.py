"""The output directory's rules: atomic shards, one owner at a time, no mixing of results made
with different settings, and what is already done read back from either format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mltag_batch import sinks, storage

MODEL = {"name": "m", "version": "1", "sha256": "0" * 64}


def row(id_: str, error: str | None = None, scores: bool = False) -> dict[str, Any]:
    r: dict[str, Any] = {"id": id_, "path": f"/x/{id_}", "tags": []}
    if scores:
        r["scores"] = None if error else {"a": 0.25, "b": 0.1}
    if error:
        r["error"] = {"code": error, "message": "why"}
    else:
        r["tags"] = [{"label": "a", "score": 0.25}]
        r["error"] = None
    r["model"] = MODEL
    return r


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_shards_round_trip_and_report_what_is_done(tmp_path: Path, fmt: str) -> None:
    out = str(tmp_path / "out")
    sinks.claim(out, {"format": fmt}, "r1")
    writer = sinks.ShardWriter(out, fmt, "r1", all_scores=True)
    name = writer.write(
        7, [row("a"), row("b", "invalid_image", scores=True), row("c", scores=True)]
    )
    assert name == f"part-r1-0000000007.{fmt}"
    assert sinks.read_done(out, fmt) == {"a": None, "b": "invalid_image", "c": None}
    assert sinks.shard_files(out) == [name]
    assert not [n for n in storage.list_dir(out) if n.startswith(".tmp-")]


def test_parquet_schema_is_fixed_and_scores_are_float32(tmp_path: Path) -> None:
    data = sinks.encode([row("a", scores=True)], "parquet", all_scores=True)
    path = tmp_path / "s.parquet"
    path.write_bytes(data)
    table = pq.read_table(path)
    assert table.schema.equals(sinks.row_schema(all_scores=True))
    assert table.schema.field("scores").type == pa.map_(pa.string(), pa.float32())
    # An all-error shard has the same columns and types (shards concatenate).
    only_errors = sinks.encode([row("b", "empty_image")], "parquet", all_scores=False)
    path.write_bytes(only_errors)
    assert pq.read_table(path).schema.equals(sinks.row_schema(all_scores=False))
    assert "scores" not in sinks.row_schema(all_scores=False).names


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    spec = {"format": "parquet", "options": {"top_k": None, "min_score": 0.5}}
    sinks.claim(out, spec, "r1")
    sinks.claim(out, json.loads(json.dumps(spec)), "r2")  # same settings: taken over
    job = sinks.read_job(out)
    assert job is not None and (job["run_id"], job["runs"]) == ("r2", 2)
    other = {"format": "parquet", "options": {"top_k": 3, "min_score": 0.5}}
    with pytest.raises(sinks.OutputError, match="options"):
        sinks.claim(out, other, "r3")


def test_a_foreign_directory_with_shards_is_refused(tmp_path: Path) -> None:
    (tmp_path / "part-0.parquet").write_bytes(b"someone else's")
    with pytest.raises(sinks.OutputError, match="not an mltag-batch output"):
        sinks.claim(str(tmp_path), {"format": "parquet"}, "r1")


def test_a_writer_whose_run_was_taken_over_publishes_nothing(tmp_path: Path) -> None:
    """A straggler from a killed run must not add rows after the rerun has counted them."""
    out = str(tmp_path / "out")
    sinks.claim(out, {"format": "jsonl"}, "old")
    old = sinks.ShardWriter(out, "jsonl", "old", all_scores=False)
    sinks.claim(out, {"format": "jsonl"}, "new")
    with pytest.raises(sinks.LeaseLostError, match="new"):
        old.write(0, [row("a")])
    assert sinks.shard_files(out) == []


def test_temp_files_of_a_killed_run_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".tmp-1234abcd-part-r1-0000000000.parquet").write_bytes(b"half")
    (tmp_path / "part-r1-0000000004.parquet").write_bytes(b"whole")
    (tmp_path / "notes.txt").write_text("mine")
    assert sinks.remove_temp_files(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "part-r1-0000000004.parquet"]


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "x.json"
    with pytest.raises(FileNotFoundError):
        storage.write_atomic(str(target), b"{}")
    storage.write_atomic(str(tmp_path / "x.json"), b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
