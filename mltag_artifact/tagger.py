"""A loaded artifact ready to tag: its runner, label index and calibrated thresholds, built once.

Probabilities become tags the same way everywhere (the service's `/tag`, batch tagging):
thresholds from the manifest, a global `min_score` or per-label overrides, then top-k.
Needs numpy (and onnxruntime through the runner).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
        info = self.manifest.label_info
        self.parents: list[list[str]] | None = [i.parents for i in info] if info else None
        self.categories: list[str | None] = [i.category for i in info] if info else []
        self._ancestors = [self._ancestors_of(i) for i in range(len(self.labels))] if info else []

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

    def select(
        self, probs: np.ndarray, thresholds: np.ndarray, how: Selection | None = None
    ) -> list[TagResult]:
        """Tags as `tags` gives them, with the label hierarchy applied: each tag's parents
        (when the model has a hierarchy); `include_parents` adds every ancestor of a tag,
        scored as its highest-scoring descendant among the tags (as Rekognition does); then
        the label and category filters, then top_k."""
        how = how or Selection()
        scores = {int(i): float(probs[i]) for i in np.flatnonzero(probs >= thresholds)}
        if how.include_parents and self._ancestors:
            for i, score in list(scores.items()):
                for a in self._ancestors[i]:
                    scores[a] = max(scores.get(a, 0.0), score)
        keep = [i for i in scores if self._passes(i, how)]
        keep.sort(key=lambda i: (-scores[i], i))
        if how.top_k is not None:
            keep = keep[: how.top_k]
        return [
            TagResult(self.labels[i], scores[i], self.parents[i] if self.parents else None)
            for i in keep
        ]

    def _passes(self, i: int, how: Selection) -> bool:
        label = self.labels[i]
        if how.include is not None and label not in how.include:
            return False
        if how.exclude is not None and label in how.exclude:
            return False
        return how.categories is None or (
            bool(self.categories) and self.categories[i] in how.categories
        )

    def _ancestors_of(self, index: int) -> list[int]:
        """Every ancestor of a label (parents, their parents...), each once, nearest first."""
        assert self.manifest.label_info is not None
        found: list[int] = []
        frontier = [index]
        while frontier:
            nxt = []
            for i in frontier:
                for parent in self.manifest.label_info[i].parents:
                    p = self.label_index[parent]
                    if p != index and p not in found:
                        found.append(p)
                        nxt.append(p)
            frontier = nxt
        return found


@dataclass(frozen=True)
class Selection:
    """Which tags to return beyond the thresholds (all optional)."""

    top_k: int | None = None
    include_parents: bool = False
    include: frozenset[str] | None = None  # only these labels
    exclude: frozenset[str] | None = None  # never these
    categories: frozenset[str] | None = None  # only labels of these categories


@dataclass(frozen=True)
class TagResult:
    label: str
    score: float
    parents: list[str] | None  # None when the model has no hierarchy

    def as_dict(self) -> dict[str, Any]:
        """The tag as `/tag` and `mltag-batch` give it: `parents` only from a model with a
        label hierarchy."""
        tag: dict[str, Any] = {"label": self.label, "score": self.score}
        if self.parents is not None:
            tag["parents"] = self.parents
        return tag
