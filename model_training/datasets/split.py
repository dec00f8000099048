"""Seeded, multilabel-stratified, group-aware train/val/test split.

Iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the Stratification of
Multi-Label Data", ECML-PKDD 2011), applied to groups of items instead of single items so
near-duplicates (the same drawing in several colours, `name_01` / `name_02`) never straddle
two splits. The rarest remaining label is handled first; each group holding it goes to the
split that still wants most of that label, ties broken by the split's overall deficit and
then by the seeded generator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def stratified_group_split(
    label_sets: Sequence[Sequence[str]],
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
    keys = [keys[i] for i in order]
    group_counts: list[dict[str, int]] = []
    for key in keys:
        counts: dict[str, int] = defaultdict(int)
        for index in members[key]:
            for label in set(label_sets[index]):
                counts[label] += 1
        group_counts.append(dict(counts))

    label_total: dict[str, int] = defaultdict(int)
    by_label: dict[str, list[int]] = defaultdict(list)
    for g, counts in enumerate(group_counts):
        for label, count in counts.items():
            label_total[label] += count
            by_label[label].append(g)
    want_label = {label: frac * total for label, total in label_total.items()}
    want_total = frac * len(label_sets)
    remaining = dict(label_total)
    assigned = np.full(len(keys), -1, dtype=np.int64)

    def choose(deficits: np.ndarray) -> int:
        best = np.flatnonzero(deficits >= deficits.max() - 1e-9)
        if len(best) > 1:
            overall = want_total[best]
            best = best[overall >= overall.max() - 1e-9]
        return int(best[0] if len(best) == 1 else rng.choice(best))

    def assign(g: int, split: int) -> None:
        assigned[g] = split
        size = len(members[keys[g]])
        want_total[split] -= size
        for label, count in group_counts[g].items():
            want_label[label][split] -= count
            remaining[label] -= count

    while True:
        open_labels = [label for label, left in remaining.items() if left > 0]
        if not open_labels:
            break
        fewest = min(remaining[label] for label in open_labels)
        rarest = sorted(label for label in open_labels if remaining[label] == fewest)
        label = rarest[0]
        for g in by_label[label]:
            if assigned[g] < 0:
                assign(g, choose(want_label[label].copy()))
    for g in range(len(keys)):
        if assigned[g] < 0:
            assign(g, choose(want_total.copy()))

    result = [0] * len(label_sets)
    for g, key in enumerate(keys):
        for index in members[key]:
            result[index] = int(assigned[g])
    return result
