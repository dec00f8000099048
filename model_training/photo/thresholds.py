"""Default thresholds of the photo model, stated rather than calibrated (no labelled photo set
exists offline; docs/photo-model.md#thresholds).

A tag's score is the probability mass the classifier puts on the classes under it. A tag that
covers k of the N classes collects about k/N of that mass from an image the classifier cannot
place at all (a flat softmax), so its threshold is that chance share scaled up:
    threshold(k) = min(ceiling, max(base, chance_factor · k / N))
`base` applies to narrow tags (a single class: "tabby"; a few: "cat"); broad tags ("animal",
398 classes; "device", 130) need clearly more than their chance share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThresholdPolicy:
    base: float = 0.3
    chance_factor: float = 2.0
    ceiling: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.base <= self.ceiling <= 1.0:
            raise ValueError(f"need 0 < base <= ceiling <= 1, got {self}")
        if self.chance_factor < 0:
            raise ValueError(f"chance_factor must be >= 0, got {self.chance_factor}")

    def threshold(self, covered: int, num_classes: int) -> float:
        chance = self.chance_factor * covered / num_classes
        return round(min(self.ceiling, max(self.base, chance)), 4)

    def describe(self) -> dict[str, Any]:
        return {
            "rule": "min(ceiling, max(base, chance_factor * classes_under_tag / 1000))",
            "base": self.base,
            "chance_factor": self.chance_factor,
            "ceiling": self.ceiling,
        }


def coverage_thresholds(
    covered: Sequence[int], num_classes: int, policy: ThresholdPolicy
) -> list[float]:
    """One threshold per tag from the number of classes it covers."""
    return [policy.threshold(k, num_classes) for k in covered]
