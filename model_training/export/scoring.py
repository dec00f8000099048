"""Scores of exported models on image files, through the code path the service runs: the
contract's `preprocess` (decode, EXIF, alpha, resize, layout/dtype) and `ModelRunner` (the
ONNX Runtime session, with the service's options)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mltag_artifact import Artifact, Preprocessing
from mltag_artifact.preprocess import preprocess
from mltag_artifact.runner import ModelRunner


def open_runner(artifact: Artifact, threads: int = 0) -> ModelRunner:
    """The runner on CPU (exports and evaluations are measured on CPU)."""
    return ModelRunner(artifact, provider="cpu", intra_op_threads=threads)


def sample_batches(
    paths: Sequence[Path], prep: Preprocessing, batch_size: int = 16, workers: int = 2
) -> Iterator[np.ndarray]:
    """Model-input batches (B, *sample) for `paths`, in order."""

    def load(path: Path) -> np.ndarray:
        return preprocess(Path(path).read_bytes(), prep)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            yield np.stack(list(pool.map(load, chunk)))


def runner_scores(
    runners: Sequence[ModelRunner],
    paths: Sequence[Path],
    prep: Preprocessing,
    batch_size: int = 16,
    workers: int = 2,
) -> list[np.ndarray]:
    """(N, C) probabilities of each runner on the same decoded images (decoded once)."""
    if not paths:
        raise ValueError("no images to score")
    outs: list[list[np.ndarray]] = [[] for _ in runners]
    for batch in sample_batches(paths, prep, batch_size, workers):
        for out, runner in zip(outs, runners, strict=True):
            out.append(runner.run(batch))
    return [np.concatenate(o) for o in outs]
