"""Seeded, multilabel-stratified, group-aware splits: the one implementation behind the data
set builders' train/val/test split and training's validation hold-out. Needs only numpy.

Iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the Stratification of
Multi-Label Data", ECML-PKDD 2011), applied to groups of items instead of single items so
near-duplicates (the same drawing in several colours, `name_01` / `name_02`) never straddle
two splits. The rarest remaining label is handled first; each group holding it goes to the
split that still wants most of that label, ties broken by the split's overall deficit and
then by the seeded generator. Groups without labels come last, each to the split furthest
below its size (the first such split on a tie).

A hold-out split (`stratified_holdout`) is the same algorithm with every item its own group
and two splits, (1 − fraction, fraction).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np

Label = TypeVar("Label", str, int)  # sortable: ties between equally rare labels go by order


def stratified_group_split(
    label_sets: Sequence[Collection[Label]],
    groups: Sequence[Hashable],
    fractions: Sequence[float],
    seed: int = 0,
) -> list[int]:
    """Return the split index (into `fractions`) of every item.

    `label_sets[i]` are item i's labels, `groups[i]` its group key; items of one group always
    share a split. Deterministic for a given input order and `seed`.
    """
    if len(label_sets) != len(groups):
        raise ValueError("label_sets and groups differ in length")
    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"bad split fractions {list(fractions)}")
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, dtype=np.float64) / float(sum(fractions))
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(groups):
        members[key].append(index)
    keys = list(members)
    order = rng.permutation(len(keys))
    placement = _Placement([members[keys[i]] for i in order], label_sets, frac, rng)
    placement.place_by_rarest_label()
    placement.place_the_rest()
    result = [0] * len(label_sets)
    for g, items in enumerate(placement.members):
        for index in items:
            result[index] = int(placement.assigned[g])
    return result


def stratified_holdout(
    targets: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_index, val_index) with about `fraction` of the images (rows of the (N, C)
    `targets`, positives > 0) in val, every label in proportion."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    y = np.asarray(targets) > 0  # (N, C)
    label_sets = [np.flatnonzero(row).tolist() for row in y]
    split = stratified_group_split(label_sets, range(len(y)), (1.0 - fraction, fraction), seed)
    side = np.asarray(split, dtype=np.int64)
    return np.flatnonzero(side == 0), np.flatnonzero(side == 1)


class _Placement(Generic[Label]):
    """Groups (in seeded order) being placed into splits, with what each split still wants."""

    def __init__(
        self,
        members: list[list[int]],
        label_sets: Sequence[Collection[Label]],
        frac: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.members = members
        self.rng = rng
        self.counts: list[dict[Label, int]] = []  # per group: label -> items holding it
        for items in members:
            counts: dict[Label, int] = defaultdict(int)
            for index in items:
                for label in set(label_sets[index]):
                    counts[label] += 1
            self.counts.append(dict(counts))
        total: dict[Label, int] = defaultdict(int)
        self.by_label: dict[Label, list[int]] = defaultdict(list)
        for g, counts in enumerate(self.counts):
            for label, count in counts.items():
                total[label] += count
                self.by_label[label].append(g)
        # label -> (S,) items each split still wants
        self.want_label: dict[Label, np.ndarray] = {lab: frac * n for lab, n in total.items()}
        self.want_total = frac * len(label_sets)  # (S,)
        self.remaining: dict[Label, int] = dict(total)  # label -> items not placed yet
        self.assigned = np.full(len(members), -1, dtype=np.int64)

    def _choose(self, deficits: np.ndarray) -> int:
        best = np.flatnonzero(deficits >= deficits.max() - 1e-9)
        if len(best) > 1:
            overall = self.want_total[best]
            best = best[overall >= overall.max() - 1e-9]
        return int(best[0] if len(best) == 1 else self.rng.choice(best))

    def _assign(self, g: int, split: int) -> None:
        self.assigned[g] = split
        self.want_total[split] -= len(self.members[g])
        for label, count in self.counts[g].items():
            self.want_label[label][split] -= count
            self.remaining[label] -= count

    def place_by_rarest_label(self) -> None:
        while True:
            open_labels = [label for label, left in self.remaining.items() if left > 0]
            if not open_labels:
                return
            fewest = min(self.remaining[label] for label in open_labels)
            label = sorted(label for label in open_labels if self.remaining[label] == fewest)[0]
            for g in self.by_label[label]:
                if self.assigned[g] < 0:
                    self._assign(g, self._choose(self.want_label[label].copy()))

    def place_the_rest(self) -> None:
        """Groups without labels, in order, each to the split furthest below its size (the
        first such split on a tie)."""
        for g in range(len(self.members)):
            if self.assigned[g] < 0:
                deficits = self.want_total
                self._assign(g, int(np.flatnonzero(deficits >= deficits.max() - 1e-9)[0]))
