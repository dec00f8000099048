"""Threshold calibration rules: F1-optimal and a per-label precision target with F1 fallback."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.calibration import (
    CalibrationError,
    calibrate,
    describe,
    label_precision,
    parse_rule,
    precision_target_thresholds,
)
from model_training.config import ConfigError, load_config
from model_training.metrics import f1_optimal_thresholds


def test_parse_rule() -> None:
    assert str(parse_rule("f1")) == "f1"
    rule = parse_rule(" Precision:0.80 ")
    assert rule.kind == "precision" and rule.target == pytest.approx(0.8)
    assert str(rule) == "precision:0.8"
    for bad in ("precision", "precision:0", "precision:1.5", "precision:x", "recall:0.8"):
        with pytest.raises(CalibrationError):
            parse_rule(bad)


def test_config_validates_the_rule() -> None:
    assert load_config(None, ["train.calibrate=precision:0.9"]).train.calibrate == "precision:0.9"
    with pytest.raises(ConfigError):
        load_config(None, ["train.calibrate=precision:2"])


def _brute_force(scores: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The lowest candidate threshold (a score) with precision >= target, by enumeration."""
    best = None
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        if (y[pred] > 0).mean() >= target:
            best = t
    return best


def test_precision_target_matches_brute_force_and_holds_on_val() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < 0.3).astype(np.float32)
    s = np.clip(0.35 * y + rng.random((300, 6)) * 0.7, 0, 1)
    thr, reached = precision_target_thresholds(s, y, 0.8)
    assert reached.all()
    prec = label_precision(s, y, thr)
    assert np.all(prec >= 0.8)
    for c in range(6):
        lowest = _brute_force(s[:, c], y[:, c], 0.8)
        assert lowest is not None
        pred_ours = s[:, c] >= thr[c]
        assert np.array_equal(pred_ours, s[:, c] >= lowest)  # same images kept
    # a higher target never lowers a threshold
    thr9, _ = precision_target_thresholds(s, y, 0.9)
    assert np.all(thr9 >= thr - 1e-12)


def test_unreachable_target_falls_back_to_f1() -> None:
    # label 0: the top-scored image is a negative: precision 1.0 is unreachable
    s = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.8], [0.2, 0.2]])
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    thr, reached = precision_target_thresholds(s, y, 1.0)
    assert list(reached) == [False, True]
    f1 = f1_optimal_thresholds(s, y)
    assert thr[0] == pytest.approx(f1[0])
    assert 0.2 < thr[1] <= 0.8  # keeps both positives (0.9, 0.8), drops the 0.1 negative
    assert label_precision(s, y, thr)[1] == pytest.approx(1.0)


def test_label_without_positives_and_ignored_entries() -> None:
    s = np.array([[0.9, 0.7], [0.1, 0.9], [0.5, 0.3]])  # 0.9 on label 1 is ignored
    y = np.array([[0, 1], [0, -1], [0, 0]], dtype=np.float32)  # -1: ignore
    thr, reached = precision_target_thresholds(s, y, 0.8, floor=0.1)
    assert list(reached) == [False, True]
    assert thr[0] == pytest.approx(0.5)  # f1_optimal's default for labels without positives
    assert thr[1] >= 0.1


def test_calibrate_and_describe() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < 0.4).astype(np.float32)
    s = np.clip(0.3 * y + rng.random((200, 3)) * 0.7, 0, 1)
    thr, reached = calibrate(s, y, parse_rule("f1"))
    assert reached is None
    assert np.allclose(thr, f1_optimal_thresholds(s, y))
    assert describe(parse_rule("f1"), ["a", "b", "c"], None)["rule"] == "f1"
    rule = parse_rule("precision:0.8")
    thr, reached = calibrate(s, y, rule)
    d = describe(rule, ["a", "b", "c"], reached, (s, y, thr))
    assert d["rule"] == "precision:0.8"
    assert d["labels_at_target"] + len(d["fallback_f1_labels"]) == 3
    assert d["test_labels_holding_target"] == d["labels_at_target"]  # same data: it holds


def test_auto_floor_keeps_the_floor_with_the_best_validation_of1() -> None:
    from model_training.calibration import AUTO_FLOORS, calibrate_with_floor
    from model_training.metrics import evaluate_scores

    rng = np.random.default_rng(3)
    # Many rare labels whose few positives score low: their F1-optimal thresholds land low and
    # fire on many negatives, which a higher floor prevents; one common, well-separated label.
    y = (rng.random((300, 12)) < 0.03).astype(np.float32)
    y[:, 0] = rng.random(300) < 0.5
    s = np.clip(rng.random((300, 12)) * 0.35 + 0.1 * y, 0, 1)
    s[:, 0] = np.clip(0.6 * y[:, 0] + 0.4 * rng.random(300), 0, 1)
    rule = parse_rule("f1")
    of1 = {
        f: evaluate_scores(s, y, calibrate(s, y, rule, f)[0]).summary()["OF1@thr"]
        for f in AUTO_FLOORS
    }
    thr, reached, floor = calibrate_with_floor(s, y, rule, "auto")
    assert floor == max(AUTO_FLOORS, key=lambda f: (of1[f], -f))
    assert floor > AUTO_FLOORS[0]  # the low floor loses here: the test is not vacuous
    assert thr.min() >= floor and reached is None
    assert np.allclose(thr, calibrate(s, y, rule, floor)[0])
    thr3, _, floor3 = calibrate_with_floor(s, y, rule, 0.3)  # a number is used as it is
    assert floor3 == 0.3 and np.allclose(thr3, calibrate(s, y, rule, 0.3)[0])
    assert describe(rule, ["x"] * 12, None, floor=floor)["floor"] == floor


def test_config_takes_a_floor_or_auto() -> None:
    assert load_config(None, ["train.threshold_floor=auto"]).train.threshold_floor == "auto"
    assert load_config(None, ["train.threshold_floor=0.3"]).train.threshold_floor == 0.3
    for bad in ("1.5", "-0.1", "sometimes"):
        with pytest.raises(ConfigError):
            load_config(None, [f"train.threshold_floor={bad}"])
