"""A reader for the noun part of the WordNet 3.0 database files (Debian's `wordnet-base`:
`/usr/share/wordnet/data.noun` and `cntlist.rev`), enough to climb from a synset to its
hypernyms. No library: the format is one synset per line (`wndb(5WN)`).

ImageNet's class ids (`n02123045`) are `n` + the 8-digit byte offset of the synset in WordNet
3.0's `data.noun`, so they are looked up here directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
# Hypernym pointers: `@` (class hypernym) and `@i` (instance hypernym, e.g. a named breed).
_HYPERNYM_SYMBOLS = frozenset({"@", "@i"})
# The noun lexicographer files (`lexnames(5WN)`), by number: a coarse category per synset.
LEXNAMES = {
    3: "tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body",
    9: "cognition", 10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group",
    15: "location", 16: "motive", 17: "object", 18: "person", 19: "phenomenon", 20: "plant",
    21: "possession", 22: "process", 23: "quantity", 24: "relation", 25: "shape", 26: "state",
    27: "substance", 28: "time",
}  # fmt: skip


class WordNetError(RuntimeError):
    """The WordNet files are missing or malformed; the message says what to install."""


@dataclass(frozen=True)
class Synset:
    """One noun synset: its id (`n` + offset), lemmas (spaces, not underscores), the lemmas'
    sense keys' use counts in the SemCor corpus (how familiar each name is), hypernym ids and
    gloss."""

    id: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]
    gloss: str = ""
    counts: tuple[int, ...] = field(default=())
    lexname: str = ""  # lexicographer file, e.g. "animal", "artifact", "food"

    @property
    def familiarity(self) -> int:
        """Times any of its names was used in this sense in SemCor (0: a rare word)."""
        return sum(self.counts)


def parse_data_line(line: str, counts: dict[str, int] | None = None) -> Synset:
    """One line of `data.noun`; `counts`: sense key -> SemCor count (`read_counts`)."""
    head, _, gloss = line.partition(" | ")
    parts = head.split()
    offset, lex_filenum = parts[0], parts[1]
    n_words = int(parts[3], 16)
    words = parts[4 : 4 + 2 * n_words : 2]
    lex_ids = parts[5 : 5 + 2 * n_words : 2]
    pos = 4 + 2 * n_words
    n_pointers = int(parts[pos])
    hypernyms = []
    for k in range(n_pointers):
        symbol, target, target_pos = parts[pos + 1 + 4 * k : pos + 4 + 4 * k]
        if symbol in _HYPERNYM_SYMBOLS and target_pos == "n":
            hypernyms.append("n" + target)
    # Adjective markers such as `(p)` never occur on nouns, but strip them defensively.
    lemmas = tuple(w.split("(")[0].replace("_", " ") for w in words)
    keys = [
        f"{w.split('(')[0].lower()}%1:{lex_filenum}:{int(i, 16):02d}::"
        for w, i in zip(words, lex_ids, strict=True)
    ]
    counts = counts or {}
    return Synset(
        id="n" + offset,
        lemmas=lemmas,
        hypernyms=tuple(hypernyms),
        gloss=gloss.strip(),
        counts=tuple(counts.get(k, 0) for k in keys),
        lexname=LEXNAMES.get(int(lex_filenum), ""),
    )


def read_counts(path: Path) -> dict[str, int]:
    """sense key -> SemCor tag count, from `cntlist.rev` (`key sense_number count`)."""
    counts: dict[str, int] = {}
    if not path.is_file():
        return counts
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and "%1:" in parts[0]:
            counts[parts[0]] = int(parts[2])
    return counts


def read_nouns(lines: Iterable[str], counts: dict[str, int] | None = None) -> dict[str, Synset]:
    """Every noun synset of `data.noun`'s lines (licence header lines start with spaces)."""
    out: dict[str, Synset] = {}
    for line in lines:
        if line.strip() and not line.startswith(" "):
            synset = parse_data_line(line, counts)
            out[synset.id] = synset
    return out


def load_wordnet(directory: Path = DEFAULT_WORDNET_DIR) -> dict[str, Synset]:
    """The WordNet 3.0 noun synsets installed at `directory`."""
    data = directory / "data.noun"
    if not data.is_file():
        raise WordNetError(
            f"no WordNet noun database at {data}: install Debian's `wordnet-base` "
            "(apt-get install wordnet-base) or pass the directory holding data.noun"
        )
    counts = read_counts(directory / "cntlist.rev")
    with data.open(encoding="utf-8", errors="replace") as f:
        synsets = read_nouns(f, counts)
    if "n00001740" not in synsets:  # entity.n.01: the root of WordNet 3.0's nouns
        raise WordNetError(f"{data} is not WordNet 3.0 (no synset 00001740 'entity')")
    return synsets


def ancestors(synsets: dict[str, Synset], sid: str) -> Iterator[str]:
    """Every hypernym of `sid`, transitively, each once (the synset itself excluded)."""
    seen: set[str] = set()
    stack = list(synsets[sid].hypernyms)
    while stack:
        s = stack.pop()
        if s in seen:
            continue
        seen.add(s)
        yield s
        stack.extend(synsets[s].hypernyms)
