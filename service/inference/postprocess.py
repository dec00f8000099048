"""Probabilities -> tags: thresholds (manifest, global override, per-label overrides), top-k."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def effective_thresholds(
    labels: Sequence[str],
    calibrated: np.ndarray,
    min_score: float | None = None,
    overrides: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Per-label threshold: a per-label override beats `min_score`, which beats calibration."""
    thr = np.full(len(labels), min_score, dtype=np.float32) if min_score is not None else calibrated
    if overrides:
        thr = thr.copy()
        index = {label: i for i, label in enumerate(labels)}
        for label, value in overrides.items():
            thr[index[label]] = value  # labels were validated by the caller
    return thr


def select_tags(
    probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray, top_k: int | None = None
) -> list[tuple[str, float]]:
    """Labels whose probability reaches their threshold, by score descending, at most top_k."""
    idx = np.flatnonzero(probs >= thresholds)
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    if top_k is not None:
        idx = idx[:top_k]
    return [(labels[int(i)], float(probs[i])) for i in idx]
