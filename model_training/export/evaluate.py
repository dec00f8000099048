"""`evaluate_artifact`: measure an exported artifact with ONNX Runtime through the service's own
code path (its preprocessing and `ModelRunner`) and the training package's metrics, so the
accuracy reported is the deployed model's, not assumed from PyTorch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mltag_artifact import ArtifactError, load_artifact

from ..config import DataConfig
from ..data import read_annotations
from ..metrics import evaluate_scores
from .errors import ExportError
from .scoring import open_runner, runner_scores

_FORMAT_BY_SUFFIX = {".json": "coco", ".csv": "csv", ".jsonl": "jsonl", ".txt": "voc"}


def evaluate_artifact(
    artifact_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    data_format: str | None = None,
    images_root: str | None = None,
    batch_size: int = 16,
    threads: int = 0,
    workers: int = 2,
) -> dict[str, Any]:
    """mAP, CF1/OF1 at 0.5 and at the artifact's thresholds, per-label AP, on an annotation
    file read against the artifact's labels. The format defaults to the one the model was
    trained with (recorded in the manifest), else guessed from the file suffix."""
    try:
        artifact = load_artifact(artifact_dir)
    except ArtifactError as e:
        raise ExportError(f"invalid artifact: {e}") from None
    m = artifact.manifest
    recorded: dict[str, Any] = dict(m.architecture.details.get("data") or {})
    fmt = data_format or recorded.get("format") or _FORMAT_BY_SUFFIX.get(Path(data).suffix)
    if fmt is None:
        raise ExportError(f"cannot tell the annotation format of {data}; pass data_format")
    options = {k: recorded[k] for k in ("label_sep", "empty_labels", "voc_difficult")
               if k in recorded}  # fmt: skip
    data_cfg = DataConfig.model_validate(
        {"format": fmt, "images_root": images_root, "train": str(data), **options}
    )
    labelled = read_annotations(data_cfg, data, list(m.labels))
    runner = open_runner(artifact, threads)
    (scores,) = runner_scores([runner], labelled.images, m.preprocessing, batch_size, workers)
    thresholds = np.asarray(m.thresholds, dtype=np.float64)
    ev = evaluate_scores(scores, labelled.targets, thresholds)
    return {
        "artifact": str(artifact.directory),
        "model": {"name": m.name, "version": m.version},
        "runtime": f"onnxruntime {_ort_version()} ({runner.provider})",
        "data": str(data),
        "skipped": dict(labelled.skipped),
        "metrics": ev.summary(),
        "per_class_ap": ev.ap_table(m.labels),
    }


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
