"""A loaded artifact ready to tag: its runner, label index and calibrated thresholds, built once.

Probabilities become tags the same way everywhere (the service's `/tag`, batch tagging):
thresholds from the manifest, a global `min_score` or per-label overrides, then top-k.
Needs numpy (and onnxruntime through the runner).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .artifact import Artifact
from .manifest import Manifest
from .runner import ModelRunner


class Tagger:
    """An artifact with its ONNX Runtime session. Immutable after construction, so one
    instance serves concurrent requests (`run` itself is called from one thread at a time)."""

    def __init__(self, artifact: Artifact, runner: ModelRunner) -> None:
        self.artifact = artifact
        self.runner = runner
        self.manifest: Manifest = artifact.manifest
        self.labels: list[str] = list(self.manifest.labels)
        self.label_index: dict[str, int] = {label: i for i, label in enumerate(self.labels)}
        self.calibrated = np.asarray(self.manifest.thresholds, dtype=np.float32)
        self.calibrated.flags.writeable = False  # shared by every request

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, *sample_shape) -> (B, C) float32 probabilities."""
        return self.runner.run(batch)

    def unknown_labels(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if name not in self.label_index]

    def thresholds(
        self, min_score: float | None = None, overrides: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Per-label threshold: a per-label override beats `min_score`, which beats the
        calibrated one. Override labels must be known (see `unknown_labels`)."""
        if min_score is None and not overrides:
            return self.calibrated
        thr = (
            np.full(len(self.labels), min_score, dtype=np.float32)
            if min_score is not None
            else self.calibrated.copy()
        )
        for label, value in (overrides or {}).items():
            thr[self.label_index[label]] = value
        return thr

    def tags(
        self, probs: np.ndarray, thresholds: np.ndarray, top_k: int | None = None
    ) -> list[tuple[str, float]]:
        """Labels whose probability reaches their threshold, by score descending, at most
        top_k."""
        idx = np.flatnonzero(probs >= thresholds)
        idx = idx[np.argsort(-probs[idx], kind="stable")]
        if top_k is not None:
            idx = idx[:top_k]
        return [(self.labels[int(i)], float(probs[i])) for i in idx]
