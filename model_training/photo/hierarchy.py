"""From classifier classes that are WordNet synsets (ImageNet-1k's 1,000) to a tag set: every
class, plus the ancestors a person would use as tags, each scored as the summed probability of
the classes under it.

Pure Python over a `{id: Synset}` mapping, so it is tested on a small hand-made hierarchy.
The rules, in order:
1. Candidates: every class, and every WordNet ancestor of a class not in `dropped`.
2. Tags with the same coverage (the same set of classes, hence always the same score) are one
   group: the most specific member is kept (a class when the group holds one), and so is every
   other member whose name is familiar (SemCor count ≥ `familiar`, e.g. "coffee" above
   "espresso"); the rest become aliases of the kept one ("mug" of "coffee mug").
3. Names: a synset's first lemma, or its next lemma when taken (case-insensitive), or
   "lemma (hypernym)"; the more familiar and broader tags get first pick.
4. Parents: the nearest kept ancestors, dropped and folded synsets climbed through; a parent
   that is an ancestor of another parent is left out (the service walks the chain itself).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .wordnet import Synset, ancestors


@dataclass(frozen=True)
class PhotoTag:
    """One tag of the photo model: its name, WordNet synset, the classifier classes whose
    probabilities sum to its score, its parents (tag names), aliases and category."""

    name: str
    synset: str
    classes: tuple[int, ...]
    parents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    category: str | None = None


def build_tags(
    synsets: dict[str, Synset],
    class_ids: Sequence[str],
    dropped: Iterable[str] = (),
    familiar: int = 5,
) -> list[PhotoTag]:
    """The tag set: the classes first, in class order, then the kept ancestors, broadest
    first (see the module doc for the rules)."""
    missing = [c for c in class_ids if c not in synsets]
    if missing:
        raise ValueError(f"{len(missing)} classes are not WordNet noun synsets, e.g. {missing[:3]}")
    coverage = _coverage(synsets, class_ids, set(dropped))
    kept, folded = _fold_same_coverage(synsets, class_ids, coverage, familiar)
    order = list(class_ids) + sorted(
        (s for s in kept if s not in set(class_ids)), key=lambda s: (-len(coverage[s]), s)
    )
    names = _names(synsets, order, coverage)
    aliases: dict[str, list[str]] = {s: [] for s in order}
    for s, keeper in folded.items():
        aliases[keeper].extend(x for x in synsets[s].lemmas if x not in aliases[keeper])
    tags = []
    for s in order:
        own = [x for x in synsets[s].lemmas if x != names[s]]
        alias = [x for x in own + aliases[s] if x.lower() != names[s].lower()]
        parents = _nearest_kept(synsets, s, set(order))
        tags.append(
            PhotoTag(
                name=names[s],
                synset=s,
                classes=tuple(sorted(coverage[s])),
                parents=tuple(names[p] for p in parents),
                aliases=tuple(dict.fromkeys(alias)),
                category=_category(synsets, s, class_ids, coverage),
            )
        )
    return tags


def _coverage(
    synsets: dict[str, Synset], class_ids: Sequence[str], dropped: set[str]
) -> dict[str, frozenset[int]]:
    """Candidate synset -> the indices of the classes under it."""
    cover: dict[str, set[int]] = {}
    for i, cid in enumerate(class_ids):
        cover.setdefault(cid, set()).add(i)
        for a in ancestors(synsets, cid):
            if a not in dropped:
                cover.setdefault(a, set()).add(i)
    return {s: frozenset(c) for s, c in cover.items()}


def _fold_same_coverage(
    synsets: dict[str, Synset],
    class_ids: Sequence[str],
    coverage: dict[str, frozenset[int]],
    familiar: int,
) -> tuple[set[str], dict[str, str]]:
    """(kept synsets, folded synset -> the kept synset it becomes an alias of)."""
    classes = set(class_ids)
    groups: dict[frozenset[int], list[str]] = {}
    for s, cover in coverage.items():
        groups.setdefault(cover, []).append(s)
    kept: set[str] = set()
    folded: dict[str, str] = {}
    for members in groups.values():
        # Most specific first: a class, then the deepest synset (most ancestors), then by id.
        members.sort(key=lambda s: (s not in classes, -_depth(synsets, s), s))
        keeper = members[0]
        kept.add(keeper)
        for s in members[1:]:
            if synsets[s].familiarity >= familiar:
                kept.add(s)
            else:
                folded[s] = keeper
    return kept, folded


def _depth(synsets: dict[str, Synset], sid: str) -> int:
    return sum(1 for _ in ancestors(synsets, sid))


def _names(
    synsets: dict[str, Synset], order: Sequence[str], coverage: dict[str, frozenset[int]]
) -> dict[str, str]:
    """Unique readable names; familiar and broad synsets choose first."""
    taken: set[str] = set()
    names: dict[str, str] = {}
    for s in sorted(order, key=lambda s: (-synsets[s].familiarity, -len(coverage[s]), s)):
        syn = synsets[s]
        name = next((x for x in syn.lemmas if x.lower() not in taken), None)
        if name is None:
            hyper = synsets[syn.hypernyms[0]].lemmas[0] if syn.hypernyms else syn.id
            name = f"{syn.lemmas[0]} ({hyper})"
            k = 2
            while name.lower() in taken:  # pragma: no cover - needs three clashing synsets
                name, k = f"{syn.lemmas[0]} ({hyper} {k})", k + 1
        taken.add(name.lower())
        names[s] = name
    return names


def _nearest_kept(synsets: dict[str, Synset], sid: str, kept: set[str]) -> list[str]:
    """The kept ancestors reached from `sid` without passing another kept one, minus those
    that are ancestors of another."""
    found: list[str] = []
    seen: set[str] = set()
    stack = list(synsets[sid].hypernyms)
    while stack:
        s = stack.pop()
        if s in seen:
            continue
        seen.add(s)
        if s in kept:
            found.append(s)
        else:
            stack.extend(synsets[s].hypernyms)
    above = {a for p in found for a in ancestors(synsets, p)}
    return sorted((p for p in found if p not in above), key=lambda p: found.index(p))


def _category(
    synsets: dict[str, Synset],
    sid: str,
    class_ids: Sequence[str],
    coverage: dict[str, frozenset[int]],
) -> str | None:
    """WordNet's lexicographer file (animal, artifact, food, plant...); for the top-level
    synsets (`tops`) the most common one among their classes."""
    lexname = synsets[sid].lexname
    if lexname and lexname != "tops":
        return lexname
    votes = Counter(synsets[class_ids[i]].lexname for i in coverage[sid])
    votes.pop("tops", None)
    votes.pop("", None)
    return votes.most_common(1)[0][0] if votes else None


def check_tags(tags: Sequence[PhotoTag]) -> None:
    """Names unique, parents are tags, every parent covers at least its child's classes."""
    by_name = {t.name: t for t in tags}
    if len(by_name) != len(tags):
        raise ValueError("duplicate tag names")
    for t in tags:
        for p in t.parents:
            if p not in by_name:
                raise ValueError(f"{t.name!r}: parent {p!r} is not a tag")
            if not set(t.classes) <= set(by_name[p].classes):
                raise ValueError(f"{t.name!r}: parent {p!r} does not cover its classes")
