from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from model_training.metrics import (
    average_precision,
    evaluate_scores,
    f1_optimal_thresholds,
    mean_average_precision,
    threshold_metrics,
)


def _data(seed: int, n: int = 60, c: int = 7, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.int64)
    s = np.clip(0.35 * y + rng.random((n, c)) * 0.8, 0, 1)
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn(seed: int, ties: bool) -> None:
    s, y = _data(seed, ties=ties)
    ours = mean_average_precision(s, y)
    ref = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(y.shape[1])]) * 100
    assert ours == pytest.approx(ref, abs=1e-9)


def test_ap_is_mean_precision_at_positive_ranks() -> None:
    # ranks of positives 1, 3, 4 -> precisions 1, 2/3, 3/4
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 1, 0])
    assert average_precision(s, y) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_classes_without_positives_are_skipped_and_ignore_excluded() -> None:
    s, y = _data(3)
    y[:, 2] = 0  # no positives
    ev = evaluate_scores(s, y)
    assert ev.skipped_classes == 1
    assert np.isnan(ev.per_class_ap[2])
    kept = [c for c in range(y.shape[1]) if c != 2]
    assert ev.mAP == pytest.approx(mean_average_precision(s[:, kept], y[:, kept]))
    # ignoring entries == deleting them
    t = y.copy()
    t[:10, 0] = -1
    assert average_precision(s[:, 0], t[:, 0]) == pytest.approx(
        average_precision_score(y[10:, 0], s[10:, 0])
    )


def test_threshold_metrics_match_sklearn() -> None:
    s, y = _data(4)
    m = threshold_metrics(s, y, 0.5)
    pred = (s >= 0.5).astype(int)
    cp = precision_score(y, pred, average="macro", zero_division=0) * 100
    cr = recall_score(y, pred, average="macro", zero_division=0) * 100
    assert m["CP"] == pytest.approx(cp)
    assert m["CR"] == pytest.approx(cr)
    assert m["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))  # not the mean of per-class F1
    assert m["OP"] == pytest.approx(precision_score(y, pred, average="micro") * 100)
    assert m["OR"] == pytest.approx(recall_score(y, pred, average="micro") * 100)
    assert m["OF1"] == pytest.approx(f1_score(y, pred, average="micro") * 100)


def test_f1_optimal_thresholds_are_optimal() -> None:
    s, y = _data(5, n=200)
    thr = f1_optimal_thresholds(s, y)
    for c in range(y.shape[1]):
        best = f1_score(y[:, c], s[:, c] >= thr[c])
        grid = max(f1_score(y[:, c], s[:, c] >= t) for t in np.unique(s[:, c]))
        assert best == pytest.approx(grid)
    # a class without positives gets the default
    y[:, 0] = 0
    assert f1_optimal_thresholds(s, y)[0] == pytest.approx(0.5)
    # calibrated thresholds never lose to 0.5 per class on the split they were fitted on
    thr = f1_optimal_thresholds(s, y)
    for c in range(1, y.shape[1]):
        assert f1_score(y[:, c], s[:, c] >= thr[c]) >= f1_score(y[:, c], s[:, c] >= 0.5)
    ev = evaluate_scores(s, y, thresholds=thr)
    assert ev.at_thresholds == threshold_metrics(s, y, thr)


def test_threshold_floor_bounds_calibration() -> None:
    from model_training.metrics import f1_optimal_thresholds

    # one positive with a tiny score: the F1-optimal threshold would sit near 0
    scores = np.array([[0.01], [0.5], [0.4], [0.3]])
    targets = np.array([[1], [0], [0], [0]])
    assert f1_optimal_thresholds(scores, targets)[0] < 0.01
    assert f1_optimal_thresholds(scores, targets, floor=0.1)[0] == pytest.approx(0.1)
