"""The work of one tagging actor: file paths in, one output row per path out, through the
contract's preprocessing, ONNX Runtime runner and `Tagger`, exactly as `POST /tag` does it.

`ImageTagger` is the stateful callable Ray Data runs in an actor pool (`map_batches`): it loads
the model once, then tags one shard per call and writes it (`sinks.ShardWriter`). Inside a
call, decode threads read and preprocess ahead of the model, which runs full batches on the
actor's own thread, the same pipeline as the service's decode pool and batcher.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mltag_artifact import Artifact, Preprocessing, load_artifact
from mltag_artifact.preprocess import UNTRUSTED_LIMITS, ImageError, preprocess
from mltag_artifact.runner import ModelRunner
from mltag_artifact.tagger import Selection, Tagger

from . import storage
from .sinks import ShardWriter

# The service's default MLTAG_MAX_IMAGE_PIXELS, so an image gets the same result (or the same
# `image_too_large` error) here as from POST /tag.
DEFAULT_MAX_PIXELS = UNTRUSTED_LIMITS.max_pixels
# Files are read whole into memory; this bounds one read (the pixel limit bounds decoding).
DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TagOptions:
    """Everything that decides an output row; a resumed run must use the same."""

    min_score: float | None = None
    thresholds: Mapping[str, float] | None = None
    top_k: int | None = None
    all_scores: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_score": self.min_score,
            "thresholds": dict(self.thresholds) if self.thresholds else None,
            "top_k": self.top_k,
            "all_scores": self.all_scores,
            "max_pixels": self.max_pixels,
            "max_bytes": self.max_bytes,
        }


@dataclass(frozen=True)
class WorkerOptions:
    """How an actor runs (speed only, never the result)."""

    batch_size: int = 16  # images per model run
    threads: int = 1  # decode threads, and ONNX Runtime intra-op threads
    provider: str = "auto"


@dataclass(frozen=True)
class Failure:
    """An input that produced no scores: its row's `error`."""

    code: str
    message: str


@dataclass(frozen=True)
class ArtifactFiles:
    """An artifact's files as bytes: shipped to every actor through Ray's object store, so an
    artifact on the driver's disk serves a whole cluster."""

    files: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def read(cls, artifact: Artifact) -> ArtifactFiles:
        root = artifact.directory
        return cls({p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()})

    def unpack(self, directory: Path) -> Artifact:
        for name, data in self.files.items():
            (directory / name).write_bytes(data)
        return load_artifact(directory)  # checks the sha256 again, after the trip


def load_input(path: str, prep: Preprocessing, options: TagOptions) -> np.ndarray | Failure:
    """Read one file and preprocess it as the service does; a Failure instead of raising, so
    one file can never fail a shard (the service answers `internal_error` where we give the
    row that code)."""
    try:
        data = storage.read_bytes(path, options.max_bytes)
    except FileNotFoundError:
        return Failure("not_found", f"no such file: {path}")
    except storage.FileTooLargeError as e:
        return Failure("file_too_large", str(e))
    except Exception as e:  # OSError, and whatever a remote filesystem raises
        return Failure("read_error", f"cannot read {path}: {e}")
    try:
        limits = dataclasses.replace(UNTRUSTED_LIMITS, max_pixels=options.max_pixels)
        return preprocess(data, prep, limits)
    except ImageError as e:
        return Failure(e.code, str(e))
    except Exception as e:  # a decoder bug or MemoryError: this file's row, not the job
        return Failure("internal_error", f"unexpected {type(e).__name__} while decoding: {e}")


@dataclass
class ShardStats:
    """Where one shard's time went (seconds; decode is summed over the decode threads)."""

    decode_s: float = 0.0
    model_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0


class ImageTagger:
    """Ray Data's stateful callable: `__init__` once per actor, `__call__` once per shard."""

    def __init__(
        self,
        artifact: ArtifactFiles | Any,
        options: TagOptions,
        worker: WorkerOptions,
        writer: ShardWriter,
    ) -> None:
        if not isinstance(artifact, ArtifactFiles):  # a Ray ObjectRef to one (see job.py)
            import ray

            artifact = ray.get(artifact)
        self.options = options
        self.worker = worker
        self.writer = writer
        unpacked = Path(tempfile.mkdtemp(prefix="mltag-artifact-"))
        try:
            loaded = artifact.unpack(unpacked)
            runner = ModelRunner(  # bulk tagging never asks for heatmaps
                loaded, worker.provider, intra_op_threads=worker.threads, explain=False
            )
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)  # the session holds the model now
        runner.warm_up(1, worker.batch_size)
        self.tagger = Tagger(loaded, runner)
        self.prep = self.tagger.manifest.preprocessing
        self.thresholds = self.tagger.thresholds(options.min_score, options.thresholds)
        m = self.tagger.manifest
        self.model = {"name": m.name, "version": m.version, "sha256": m.onnx.sha256}
        self.pool = ThreadPoolExecutor(worker.threads, thread_name_prefix="mltag-decode")
        self.pid = os.getpid()
        self.ready_at = time.time()  # wall clock: the driver compares it across processes

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
        t0 = time.perf_counter()
        stats = ShardStats()
        ids = [str(i) for i in batch["id"]]
        paths = [str(p) for p in batch["path"]]
        results = self.tag(paths, stats)
        rows = [self.row(i, p, r) for i, p, r in zip(ids, paths, results, strict=True)]
        t1 = time.perf_counter()
        name = self.writer.write(int(batch["seq"][0]), rows)
        stats.write_s = time.perf_counter() - t1
        stats.wall_s = time.perf_counter() - t0
        codes = Counter(r["error"]["code"] for r in rows if r["error"] is not None)
        return {
            "shard": [name],
            "rows": [len(rows)],
            "errors": [sum(codes.values())],
            "error_codes": [dict(codes)],
            "decode_s": [stats.decode_s],
            "model_s": [stats.model_s],
            "write_s": [stats.write_s],
            "wall_s": [stats.wall_s],
            "actor": [self.pid],
            "ready_at": [self.ready_at],
        }

    def tag(self, paths: list[str], stats: ShardStats) -> list[np.ndarray | Failure]:
        """Probabilities (or a Failure) per path, in order. Decoding runs ahead of the model
        by a bounded window, so memory stays flat whatever the shard size."""
        results: list[np.ndarray | Failure] = [Failure("model_error", "not run")] * len(paths)
        window = 2 * self.worker.batch_size + self.worker.threads
        queued: deque[tuple[int, Future[tuple[np.ndarray | Failure, float]]]] = deque()
        next_index = 0
        batch_idx: list[int] = []
        batch_x: list[np.ndarray] = []
        while queued or next_index < len(paths):
            while next_index < len(paths) and len(queued) < window:
                queued.append((next_index, self.pool.submit(self._load, paths[next_index])))
                next_index += 1
            i, future = queued.popleft()
            item, seconds = future.result()
            stats.decode_s += seconds
            if isinstance(item, Failure):
                results[i] = item
                continue
            batch_idx.append(i)
            batch_x.append(item)
            if len(batch_x) == self.worker.batch_size:
                self._run(batch_idx, batch_x, results, stats)
                batch_idx, batch_x = [], []
        if batch_x:
            self._run(batch_idx, batch_x, results, stats)
        return results

    def _run(
        self,
        indices: list[int],
        samples: list[np.ndarray],
        results: list[np.ndarray | Failure],
        stats: ShardStats,
    ) -> None:
        t = time.perf_counter()
        probs = self.tagger.run(np.stack(samples))  # (B, C)
        stats.model_s += time.perf_counter() - t
        for i, p in zip(indices, probs, strict=True):
            results[i] = p

    def _load(self, path: str) -> tuple[np.ndarray | Failure, float]:
        t = time.thread_time()
        item = load_input(path, self.prep, self.options)
        return item, time.thread_time() - t

    def row(self, id_: str, path: str, result: np.ndarray | Failure) -> dict[str, Any]:
        """One output row, with the fields of a `/tag` result (`tags`, `scores`, `error`)."""
        row: dict[str, Any] = {"id": id_, "path": path, "tags": []}
        if self.options.all_scores:
            row["scores"] = None
        error = None
        if isinstance(result, Failure):
            error = {"code": result.code, "message": result.message}
        elif not np.all(np.isfinite(result)):
            error = {"code": "model_error", "message": "the model returned no valid score"}
        else:
            how = Selection(top_k=self.options.top_k)
            row["tags"] = [t.as_dict() for t in self.tagger.select(result, self.thresholds, how)]
            if self.options.all_scores:
                row["scores"] = dict(zip(self.tagger.labels, map(float, result), strict=True))
        row["error"] = error
        row["model"] = self.model
        return row
