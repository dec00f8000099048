"""OpenClipart's category folders as a label hierarchy (`hierarchy.json`).

A drawing filed under `animals/mammals/cat` gives the edges cat -> mammal -> animal (labels
as the folder rule makes them, singularised). A label's parents are the nearest folder above
it that is itself a label, kept where that edge accounts for at least `min_share` of the
label's folder placements (one odd filing does not make `cat` a kind of `sign`). Edges are
added strongest first and one that would close a cycle is skipped. A label's category is the
top-level folder it is most often filed under.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import labels as rules

Edge = tuple[str, str]  # (child, parent)


def folder_paths(
    categories: Iterable[str], singular: dict[str, str], vocabulary: set[str]
) -> list[list[str]]:
    """Each category path as its labels, top first (components that are not labels left out)."""
    out = []
    for category in categories:
        tokens = rules.apply_singular(rules.folder_tokens(category), singular)
        kept = [t for t in tokens if t in vocabulary]
        if kept:
            out.append(kept)
    return out


def _reaches(parents: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(parents.get(node, []))
    return False


def folder_hierarchy(paths: Sequence[list[str]], min_share: float = 0.2) -> dict[str, dict]:
    """`{"labels": {label: {"parents": [...], "category": top}}}` from label paths."""
    edges: Counter[Edge] = Counter()
    placements: Counter[str] = Counter()
    tops: dict[str, Counter[str]] = defaultdict(Counter)
    for path in paths:
        for i, label in enumerate(path):
            placements[label] += 1
            tops[label][path[0]] += 1
            if i:
                edges[(label, path[i - 1])] += 1
    parents: dict[str, list[str]] = defaultdict(list)
    for (child, parent), n in sorted(edges.items(), key=lambda e: (-e[1], e[0])):
        if n >= min_share * placements[child] and not _reaches(parents, parent, child):
            parents[child].append(parent)
    return {
        "labels": {
            label: {"parents": parents.get(label, []), "category": top.most_common(1)[0][0]}
            for label, top in sorted(tops.items())
        }
    }


def write_hierarchy(path: Path, hierarchy: dict[str, dict]) -> None:
    path.write_text(json.dumps(hierarchy, indent=1, sort_keys=True) + "\n", encoding="utf-8")
