"""The output directory: sharded Parquet or JSONL files, each published atomically, a job file
that pins what the rows mean, and the summary.

Resuming rests on three rules. A shard appears whole or not at all (`storage.write_atomic`),
so every shard present is complete. Each row carries its input's id, so a rerun skips the ids
already written. And one run at a time owns the directory: `_job.json` names the run, and a
writer publishes only while its run still owns it, so a run killed and restarted cannot have a
straggler from the old run add a second row for an input the new run also tagged.

Names starting with `_` or `.` are skipped by pyarrow datasets, Ray and Spark, so the
directory reads as one dataset of rows (`pyarrow.dataset.dataset(OUT)`).
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage

EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl"}
SHARD_PREFIX = "part-"
JOB_FILE = "_job.json"
SUMMARY_FILE = "_summary.json"

_TAG = pa.struct([("label", pa.string()), ("score", pa.float32())])
# Models with a label hierarchy (manifest `label_info`) give each tag its parents, as /tag does.
_TAG_WITH_PARENTS = pa.struct(
    [("label", pa.string()), ("score", pa.float32()), ("parents", pa.list_(pa.string()))]
)
_ERROR = pa.struct([("code", pa.string()), ("message", pa.string())])
_MODEL = pa.struct([("name", pa.string()), ("version", pa.string()), ("sha256", pa.string())])


class OutputError(Exception):
    """The output directory holds something this run must not touch or mix with."""


class LeaseLostError(OutputError):
    """Another run took the output directory over; this one must stop writing."""


def row_schema(all_scores: bool, parents: bool = False) -> pa.Schema:
    """Rows as `/tag` results: `tags` (label, score, and parents for a model with a label
    hierarchy) by score; `scores` (every label, with --all-scores); `error` {code, message} or
    null; the model that made them. Scores are the model's float32 values, so they compare
    exactly with the service's JSON."""
    fields: list[tuple[str, pa.DataType]] = [
        ("id", pa.string()),
        ("path", pa.string()),
        ("tags", pa.list_(_TAG_WITH_PARENTS if parents else _TAG)),
    ]
    if all_scores:
        fields.append(("scores", pa.map_(pa.string(), pa.float32())))
    fields += [("error", _ERROR), ("model", _MODEL)]
    return pa.schema(fields)


def shard_name(run_id: str, first_seq: int, fmt: str) -> str:
    """Named by the run and the shard's first input, so a retried task rewrites its own file
    instead of adding a second one."""
    return f"{SHARD_PREFIX}{run_id}-{first_seq:010d}{EXTENSIONS[fmt]}"


def encode(rows: list[dict[str, Any]], fmt: str, all_scores: bool, parents: bool = False) -> bytes:
    if fmt == "jsonl":
        # As the service's JSON responses: UTF-8, compact, no NaN.
        dump = functools.partial(
            json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return "".join(dump(r) + "\n" for r in rows).encode("utf-8")
    table = pa.Table.from_pylist(rows, schema=row_schema(all_scores, parents))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@dataclass(frozen=True)
class ShardWriter:
    """Writes one shard per call, atomically; sent to every actor (plain data, picklable)."""

    output: str
    fmt: str
    run_id: str
    all_scores: bool
    parents: bool = False  # the model has a label hierarchy: tags carry their parents

    def write(self, first_seq: int, rows: list[dict[str, Any]]) -> str:
        name = shard_name(self.run_id, first_seq, self.fmt)
        data = encode(rows, self.fmt, self.all_scores, self.parents)
        owner = read_job(self.output)
        if owner is None or owner.get("run_id") != self.run_id:
            raise LeaseLostError(
                f"{self.output} now belongs to run {owner and owner.get('run_id')!r}, not to "
                f"this run {self.run_id!r}: two runs must not write one output directory"
            )
        storage.write_atomic(storage.join(self.output, name), data)
        return name


# ---------------------------------------------------------------------------- the job file
def read_job(output: str) -> dict[str, Any] | None:
    try:
        job: dict[str, Any] = json.loads(storage.read_bytes(storage.join(output, JOB_FILE)))
    except FileNotFoundError:
        return None
    return job


def write_json(path: str, value: Mapping[str, Any]) -> None:
    storage.write_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode())


def claim(output: str, spec: Mapping[str, Any], run_id: str) -> None:
    """Take the output directory over for `run_id`, after checking that what it holds was
    made with the same `spec` (model, format, tagging options): rows made differently must
    never be mixed in one output."""
    storage.make_dirs(output)
    spec = json.loads(json.dumps(spec))  # as it will read back
    previous = read_job(output)
    if previous is None and shard_files(output):
        raise OutputError(
            f"{output} holds {SHARD_PREFIX}* files but no {JOB_FILE}: not an mltag-batch output; "
            "use a new or empty directory"
        )
    if previous is not None and previous.get("spec") != spec:
        old = previous.get("spec") or {}
        changed = sorted(k for k in {*old, *spec} if old.get(k) != spec.get(k))
        raise OutputError(
            f"{output} holds results made with different settings ({', '.join(changed)}): "
            "rerun with the same model and options to resume, or write to a new directory"
        )
    runs = (previous or {}).get("runs", 0) + 1
    record = {"spec": spec, "run_id": run_id, "runs": runs, "claimed_at": _now()}
    write_json(storage.join(output, JOB_FILE), record)


def remove_temp_files(output: str) -> int:
    """Delete temp files a killed run left behind (ours only: the hidden temp prefix)."""
    names = [n for n in storage.list_dir(output) if n.startswith(storage.TEMP_PREFIX)]
    for name in names:
        storage.delete(storage.join(output, name))
    return len(names)


def shard_files(output: str, fmt: str | None = None) -> list[str]:
    exts = tuple(EXTENSIONS.values()) if fmt is None else (EXTENSIONS[fmt],)
    return sorted(
        n for n in storage.list_dir(output) if n.startswith(SHARD_PREFIX) and n.endswith(exts)
    )


def read_done(output: str, fmt: str) -> dict[str, str | None]:
    """id -> error code (None when tagged) of every row already in the output."""
    done: dict[str, str | None] = {}
    for name in shard_files(output, fmt):
        path = storage.join(output, name)
        if fmt == "jsonl":
            for line in storage.read_bytes(path).splitlines():
                if line.strip():
                    row = json.loads(line)
                    done[row["id"]] = (row.get("error") or {}).get("code")
            continue
        loc, inner = storage.locate(path)
        table = pq.read_table(inner, filesystem=loc.fs, columns=["id", "error"])
        codes = pc.struct_field(table.column("error"), "code")  # null where the row is fine
        done.update(zip(table.column("id").to_pylist(), codes.to_pylist(), strict=True))
    return done


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
