"""Seeded, multilabel-stratified hold-out split (iterative stratification, Sechidis et al. 2011).

Labels are placed rarest first: each image carrying the current label goes to the subset that
still needs the most of that label, so even rare labels land in validation in proportion.
"""

from __future__ import annotations

import numpy as np


def stratified_holdout(
    targets: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train_index, val_index) with about `fraction` of the images in val."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    y = np.asarray(targets) > 0  # (N, C)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    ratios = np.array([1.0 - fraction, fraction])
    want_size = ratios * n  # (2,)
    want_label = ratios[:, None] * y.sum(axis=0)[None, :]  # (2, C)
    assign = np.full(n, -1, dtype=np.int64)
    remaining = y.copy()
    perm = rng.permutation(n)
    while True:
        counts = remaining.sum(axis=0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in perm[remaining[perm, label]]:
            need = want_label[:, label]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                best = best[want_size[best] == want_size[best].max()]
            s = int(best[0] if len(best) == 1 else rng.choice(best))
            assign[i] = s
            want_label[s] -= y[i]
            want_size[s] -= 1
            remaining[i] = False
    for i in perm[assign[perm] < 0]:  # images without positives: fill by size
        s = int(np.argmax(want_size))
        assign[i] = s
        want_size[s] -= 1
    return np.flatnonzero(assign == 0), np.flatnonzero(assign == 1)
