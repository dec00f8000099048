"""Per-label thresholds chosen on the validation split: F1-optimal (`f1`), or for a precision
target (`precision:0.8`): per label, the lowest threshold (most recall) whose validation
precision reaches the target, and the F1-optimal threshold where no threshold reaches it.

Every threshold is at least `train.threshold_floor`; `auto` tries the floors in `AUTO_FLOORS`
and keeps the one with the best pooled F1 (OF1) on validation. Per-label thresholds fitted on a
small validation split often land very low for labels with few positives and then fire on many
images: a floor trades a little per-label F1 on validation for much better precision overall
(benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20).

`train.calibrate` picks the rule at the end of training; `mltag-train calibrate` applies
another one to a finished run. What was chosen is recorded in metrics.json (`final.
calibration`), the manifest (`architecture.details.calibration`) and the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import evaluate_scores, f1_optimal_thresholds

AUTO_FLOORS = (0.1, 0.2, 0.3, 0.4, 0.5)


class CalibrationError(ValueError):
    """A calibration rule that cannot be read."""


@dataclass(frozen=True)
class CalibrationRule:
    kind: str  # "f1" | "precision"
    target: float | None = None  # the precision target, for kind "precision"

    def __str__(self) -> str:
        return "f1" if self.kind == "f1" else f"precision:{self.target:g}"


def parse_rule(text: str) -> CalibrationRule:
    """`f1` or `precision:P` with 0 < P <= 1 (`precision:0.8`)."""
    value = text.strip().lower()
    if value == "f1":
        return CalibrationRule("f1")
    kind, sep, target = value.partition(":")
    if kind == "precision" and sep:
        try:
            p = float(target)
        except ValueError:
            p = float("nan")
        if 0.0 < p <= 1.0:
            return CalibrationRule("precision", p)
    raise CalibrationError(f"calibration {text!r}: expected 'f1' or 'precision:P' with 0 < P <= 1")


def precision_target_thresholds(
    scores: np.ndarray, targets: np.ndarray, precision: float, floor: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (C,), reached (C,) bool): per label the lowest threshold with validation
    precision >= `precision` (the midpoint below the last score kept, as the F1 rule does);
    where none reaches it (or the label has no positive), the F1-optimal threshold and
    reached = False. Thresholds are bounded below by `floor`."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    out = f1_optimal_thresholds(s, t, floor=floor)
    reached = np.zeros(s.shape[1], dtype=bool)
    for c in range(s.shape[1]):
        keep = t[:, c] >= 0
        sc, y = s[keep, c], (t[keep, c] > 0).astype(np.float64)
        if y.sum() == 0:
            continue
        order = np.argsort(-sc, kind="mergesort")
        sc, y = sc[order], y[order]
        last = np.r_[np.nonzero(np.diff(sc))[0], len(sc) - 1]  # ends of runs of equal scores
        tp = np.cumsum(y)[last]
        ok = np.flatnonzero(tp / (last + 1) >= precision - 1e-12)
        if ok.size == 0:
            continue
        i = last[ok[-1]]  # the most images kept while precision holds
        lower = sc[i + 1] if i + 1 < len(sc) else max(sc[i] - 1e-3, 0.0)
        out[c] = max((sc[i] + lower) / 2, floor, 1e-6)
        reached[c] = True
    return np.clip(out, 0.0, 1.0), reached


def calibrate(
    scores: np.ndarray, targets: np.ndarray, rule: CalibrationRule, floor: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Thresholds by `rule`; with a precision rule also which labels reached the target."""
    if rule.kind == "f1":
        return f1_optimal_thresholds(scores, targets, floor=floor), None
    assert rule.target is not None
    return precision_target_thresholds(scores, targets, rule.target, floor=floor)


def calibrate_with_floor(
    scores: np.ndarray, targets: np.ndarray, rule: CalibrationRule, floor: float | str
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """`calibrate` with `floor`, or with `floor="auto"` the floor of `AUTO_FLOORS` whose
    thresholds give the best validation OF1 (the lowest on ties); returns the floor used."""
    if floor != "auto":
        return (*calibrate(scores, targets, rule, float(floor)), float(floor))
    best: tuple[float, np.ndarray, np.ndarray | None, float] | None = None
    for f in AUTO_FLOORS:
        thresholds, reached = calibrate(scores, targets, rule, f)
        of1 = evaluate_scores(scores, targets, thresholds).summary()["OF1@thr"]
        if best is None or of1 > best[0] + 1e-9:
            best = (of1, thresholds, reached, f)
    assert best is not None
    return best[1], best[2], best[3]


def label_precision(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per-label precision at `thresholds` (NaN where nothing is predicted)."""
    s, t = np.asarray(scores), np.asarray(targets)
    valid = t >= 0
    pred = (s >= thresholds[None, :]) & valid
    tp = (pred & (t > 0)).sum(axis=0).astype(np.float64)
    n = pred.sum(axis=0).astype(np.float64)
    return np.divide(tp, n, out=np.full_like(tp, np.nan), where=n > 0)


def describe(
    rule: CalibrationRule,
    labels: list[str],
    reached: np.ndarray | None,
    test: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    floor: float | None = None,
) -> dict[str, Any]:
    """What metrics.json and the manifest record: the rule, the floor, and for a precision rule
    which labels fell back to F1 and how often the target held on test (scores, targets, thr)."""
    out: dict[str, Any] = {"rule": str(rule), "split": "val"}
    if floor is not None:
        out["floor"] = floor
    if rule.kind == "f1":
        out["note"] = "F1-optimal per label on the validation split"
        return out
    assert reached is not None
    assert rule.target is not None
    out["labels_at_target"] = int(reached.sum())
    out["fallback_f1_labels"] = [lab for lab, r in zip(labels, reached, strict=True) if not r]
    out["note"] = (
        f"per label the lowest threshold with validation precision >= {rule.target:g}; "
        "F1-optimal where no threshold reaches it (fallback_f1_labels)"
    )
    if test is not None:
        prec = label_precision(*test)[reached]
        judged = ~np.isnan(prec)
        out["test_labels_judged"] = int(judged.sum())
        out["test_labels_holding_target"] = int((prec[judged] >= rule.target).sum())
        out["test_median_precision"] = float(np.median(prec[judged])) if judged.any() else None
    return out
