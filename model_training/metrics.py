"""Multilabel metrics (docs/method.md#evaluation). Inputs are numpy arrays: scores (N, C) in
[0, 1] and targets (N, C) in {1, 0, -1}; a target < 0 ("ignore") is excluded from every metric.

- AP per class, non-interpolated: AP = Σ_n (R_n − R_{n−1}) P_n over the distinct score
  thresholds, i.e. the mean of precision@rank over the positives' ranks when there are no ties
  (and the same value as scikit-learn's `average_precision_score` with ties).
- mAP = mean AP over the classes that have at least one positive. Classes without positives are
  **skipped** (the reference counted them as 0, which rewards nothing and punishes small splits);
  `skipped_classes` reports how many.
- CP, CR averaged over classes, CF1 = 2·CP·CR/(CP+CR); OP, OR, OF1 from TP/FP/FN pooled over
  all classes. At threshold 0.5 and at per-class thresholds (`thresholds=`).
- `f1_optimal_thresholds`: per class, the threshold maximising F1, chosen on the validation
  split only.
All percentages are in [0, 100].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _check(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must be equal (N, C) shapes")
    return s, t


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class (1-d arrays); NaN when there is no positive."""
    keep = targets >= 0
    s = np.asarray(scores, dtype=np.float64)[keep]
    y = (np.asarray(targets)[keep] > 0).astype(np.float64)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    # one point per distinct threshold: the last index of each run of equal scores
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    delta = np.diff(np.r_[0.0, recall])
    return float(np.sum(delta * precision))


def per_class_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    s, t = _check(scores, targets)
    return np.array([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])])


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP in [0, 100] over classes with at least one positive (others skipped)."""
    return _mean_ap(per_class_ap(scores, targets))


def _mean_ap(ap: np.ndarray) -> float:
    """Mean of per-class AP (NaN: no positive) in percent; NaN when no class has one."""
    if np.all(np.isnan(ap)):
        return float("nan")
    return float(np.nanmean(ap) * 100.0)


def threshold_metrics(
    scores: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray = 0.5
) -> dict[str, float]:
    """CP/CR/CF1 (class-averaged) and OP/OR/OF1 (pooled), in percent; predict score >= t."""
    s, t = _check(scores, targets)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (s.shape[1],))
    valid = t >= 0
    pred = (s >= thr[None, :]) & valid
    pos = (t > 0) & valid
    tp = (pred & pos).sum(axis=0).astype(np.float64)  # (C,)
    fp = (pred & ~pos).sum(axis=0).astype(np.float64)
    fn = (~pred & pos).sum(axis=0).astype(np.float64)
    # Per-class precision of a class never predicted is 0 (no correct predictions), recall of
    # a class with no positives is undefined: such classes are left out of CR as in mAP.
    cp_c = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    has_pos = (tp + fn) > 0
    cr_c = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=has_pos)
    cp = float(cp_c[has_pos].mean()) if has_pos.any() else 0.0
    cr = float(cr_c[has_pos].mean()) if has_pos.any() else 0.0
    cf1 = 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0
    op = float(tp.sum() / (tp.sum() + fp.sum())) if tp.sum() + fp.sum() > 0 else 0.0
    orr = float(tp.sum() / (tp.sum() + fn.sum())) if tp.sum() + fn.sum() > 0 else 0.0
    of1 = 2 * op * orr / (op + orr) if op + orr > 0 else 0.0
    return {
        "CP": cp * 100,
        "CR": cr * 100,
        "CF1": cf1 * 100,
        "OP": op * 100,
        "OR": orr * 100,
        "OF1": of1 * 100,
    }


def f1_optimal_thresholds(
    scores: np.ndarray, targets: np.ndarray, default: float = 0.5, floor: float = 0.0
) -> np.ndarray:
    """Per class, the threshold with the best F1 (predict score >= t); `default` for classes
    without a positive. The threshold is the midpoint between the last score predicted
    positive and the next lower score, so it generalises better than the score itself.

    `floor` bounds thresholds from below. With only a few validation positives, the F1-optimal
    threshold is often near 0 and then fires on most images; what a floor of 0.1 changes is
    measured in benchmarks/RESULTS.md#the-threshold-floor."""
    s, t = _check(scores, targets)
    out = np.full(s.shape[1], default, dtype=np.float64)
    for c in range(s.shape[1]):
        keep = t[:, c] >= 0
        sc = s[keep, c]
        y = (t[keep, c] > 0).astype(np.float64)
        n_pos = y.sum()
        if n_pos == 0:
            continue
        order = np.argsort(-sc, kind="mergesort")
        sc, y = sc[order], y[order]
        last = np.r_[np.nonzero(np.diff(sc))[0], len(sc) - 1]
        tp = np.cumsum(y)[last]
        predicted = last + 1
        f1 = 2 * tp / (predicted + n_pos)
        best = int(np.argmax(f1))
        i = last[best]
        lower = sc[i + 1] if i + 1 < len(sc) else max(sc[i] - 1e-3, 0.0)
        out[c] = float((sc[i] + lower) / 2)
    return np.clip(out, max(floor, 1e-6), 1.0)


@dataclass
class Evaluation:
    mAP: float  # noqa: N815 - the metric's name
    per_class_ap: np.ndarray
    at_05: dict[str, float]
    at_thresholds: dict[str, float] | None
    num_images: int
    skipped_classes: int

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mAP": self.mAP, "num_images": self.num_images}
        out.update({f"{k}@0.5": v for k, v in self.at_05.items()})
        if self.at_thresholds is not None:
            out.update({f"{k}@thr": v for k, v in self.at_thresholds.items()})
        out["classes_without_positives"] = self.skipped_classes
        return out

    def ap_table(self, labels: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {"label": label, "AP": None if np.isnan(ap) else float(ap * 100)}
            for label, ap in zip(labels, self.per_class_ap, strict=True)
        ]


def evaluate_scores(
    scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | None = None
) -> Evaluation:
    ap = per_class_ap(scores, targets)
    at_thr = None if thresholds is None else threshold_metrics(scores, targets, thresholds)
    return Evaluation(
        mAP=_mean_ap(ap),
        per_class_ap=ap,
        at_05=threshold_metrics(scores, targets, 0.5),
        at_thresholds=at_thr,
        num_images=int(np.asarray(scores).shape[0]),
        skipped_classes=int(np.isnan(ap).sum()),
    )
