"""Keyword and folder-name normalisation for OpenClipart labels.

The rules are data, kept in this module's tables so the dataset card can print them:

1. Folder names: every component of an image's category path is a label
   (`animals/mammals/big_cats` -> animal, mammal, big cat) unless it is a collection or
   theme name in `DROP_FOLDERS` (unsorted, special, etiquette-theme, ...).
2. `dc:subject` keywords: a keyword that is a multi-word author name is dropped whole; the
   rest is split on commas, semicolons and whitespace into tokens.
3. Each token: Unicode NFKC, lower case, `_`/`-` become spaces, surrounding punctuation
   stripped. Tokens that look like machine output or metadata are dropped (numbers and
   year-like tokens, `hash(0x...)`, hex, e-mail addresses, URLs, anything with `/` or `.`),
   as are the meta-keywords in `META_KEYWORDS` and the parts of the image's own author
   names (unless the part is also a category folder name, e.g. "navy").
4. `SYNONYMS` maps spelling variants, irregular plurals and near-synonyms onto one label.
5. Regular plurals become singular when the singular is itself a known label
   ("stars" -> "star" because "star" occurs), never for words in `PLURAL_EXCEPTIONS`;
   in multi-word labels only the last word changes, and "x and y" labels are kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable

# Folder components that name a collection, a theme or a catch-all, not what is drawn.
DROP_FOLDERS: frozenset[str] = frozenset(
    {
        "unsorted",
        "duplicates",
        "special",
        "examples",
        "00_strawberry_border",
        "01_gift_certificate",
        "miscellany",
        "stock",
        "generic",
        "etiquette-theme",
        "lemon-theme",
        "flat-theme",
    }
)

# Keywords about the file, the collection or the tool rather than the picture.
META_KEYWORDS: frozenset[str] = frozenset(
    {
        "clip art",
        "clipart",
        "openclipart",
        "open clip art",
        "open clip art library",
        "ocal",
        "public domain",
        "public",
        "domain",
        "pd",
        "svg",
        "png",
        "image",
        "picture",
        "drawing",
        "illustration",
        "vector",
        "vectorized",
        "inkscape",
        "sodipodi",
        "remix",
        "media",
        "hash",
        "magick",
        "stock",
        "theme",
        "lemon theme icon",
        "unsorted",
        "special",
        "examples",
        "samples",
        "template",
        "object",
        "objects",
        "stuff",
        "misc",
        "miscellany",
        "other",
        "new",
        "nice",
        "pretty",
        "cute",
        "simple",
        "one",
        "two",
        "and",
        "for",
        "not",
        "do",
        "the",
        "of",
        "a",
        "en",
        "t",
        "e",
        "o",
    }
)

# Variant -> canonical label. Applied after the token clean-up and before singularisation.
SYNONYMS: dict[str, str] = {
    # spelling variants and run-together words
    "xmas": "christmas",
    "xmass": "christmas",
    "northamerica": "north america",
    "southamerica": "south america",
    "latinamerica": "latin america",
    "unitedstates": "united states",
    "unitedkingdom": "united kingdom",
    "uk": "united kingdom",
    "vegitable": "vegetable",
    "deserts": "dessert",
    "icecream": "ice cream",
    "mime types": "mimetype",
    "mimetypes": "mimetype",
    "mimeicon": "mimetype",
    "filesystems": "filesystem",
    "roadsign": "road sign",
    "roadsigns": "road sign",
    "signalflag": "signal flag",
    "mapsym": "map symbol",
    "map symbols": "map symbol",
    "weathersym": "weather",
    "networksym": "network",
    "musicsym": "music",
    "musicstuff": "music",
    "mathsymbol": "math",
    "appicon": "application",
    "apps": "application",
    "actions": "action",
    "bodypart": "body part",
    "smilies": "smiley",
    "stickmen": "stickman",
    "cardbacks": "card back",
    "aiga symbols": "aiga symbol",
    "religholiday": "holiday",
    "usholiday": "holiday",
    "holidays": "holiday",
    "valentines": "valentine",
    "housecats": "cat",
    "housecat": "cat",
    "kitten": "cat",
    "feline": "cat",
    "felini": "cat",
    "felino": "cat",
    "puppy": "dog",
    "bugs": "insect",
    "bug": "insect",
    "boating": "boat",
    "hummers": "hummer",
    "homes": "house",
    "home": "house",
    "houses": "house",
    "transport": "transportation",
    "automobile": "car",
    "automobiles": "car",
    "auto": "car",
    "voiture": "car",
    "bike": "bicycle",
    "bicycles": "bicycle",
    "plane": "airplane",
    "planes": "airplane",
    "aeroplane": "airplane",
    "tv": "television",
    "pc": "computer",
    "lightbulb": "light bulb",
    "bulb": "light bulb",
    "cellphone": "mobile phone",
    "handphone": "mobile phone",
    "cellular": "mobile phone",
    "phone": "telephone",
    "drink": "beverage",
    "drinks": "beverage",
    "vegitables": "vegetable",
    "fruits": "fruit",
    "human": "people",
    "person": "people",
    # irregular plurals
    "men": "man",
    "women": "woman",
    "children": "child",
    "kids": "child",
    "leaves": "leaf",
    "leafs": "leaf",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "knives": "knife",
    "wolves": "wolf",
    "fungi": "fungus",
    "cactuses": "cactus",
    # near-synonyms that would otherwise split one concept
    "jewellery": "jewelry",
    "colour": "color",
    "santa claus": "santa",
    "pere noel": "santa",
    "fatherchristmas": "santa",
    "football pitch": "soccer",
}

# Words ending in "s" that are not plurals of another label.
PLURAL_EXCEPTIONS: frozenset[str] = frozenset(
    {
        "news",
        "christmas",
        "glass",
        "glasses",
        "bus",
        "gas",
        "species",
        "series",
        "physics",
        "mathematics",
        "electronics",
        "aids",
        "arts",
        "dice",
        "lens",
        "cactus",
        "citrus",
        "octopus",
        "walrus",
        "platypus",
        "virus",
        "canvas",
        "chess",
        "dress",
        "cross",
        "grass",
        "compass",
        "moss",
        "boss",
        "texas",
        "kansas",
        "arkansas",
        "paris",
        "wales",
        "netherlands",
        "emblems",
        "states",
        "rights",
        "fries",
        "froggies",
        "windows",
    }
)

_SPLIT = re.compile(r"[,;\s]+")
_NUMBER = re.compile(r"^[0-9][0-9.:/x-]*$")
_HEXY = re.compile(r"^(hash\()?0x[0-9a-f]+\)?$")
_STRIP = "\"'()[]{}<>!?.:=*#&+|`~^"
_NAME_SPLIT = re.compile(r"[\s_.,()\[\]@<>-]+")


def clean_token(raw: str) -> str:
    """Unicode-normalise, lower-case and tidy one token; `_` and `-` become spaces."""
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    text = text.replace("_", " ").replace("-", " ")
    text = " ".join(text.split())
    return text.strip(_STRIP).strip()


def is_junk(token: str) -> bool:
    """Machine-made or non-descriptive tokens: numbers, years, hashes, addresses, URLs."""
    if len(token) < 2:
        return True
    if _NUMBER.match(token) or _HEXY.match(token.replace(" ", "")):
        return True
    if token.startswith("hash(") or "0x" in token:
        return True
    if "@" in token or "://" in token or token.startswith("www") or "/" in token:
        return True
    if "." in token or "&" in token or "(" in token:
        return True
    return not any(ch.isalpha() for ch in token)


def name_parts(names: Iterable[str]) -> set[str]:
    """The lower-case word parts (≥ 2 letters) of author names."""
    parts: set[str] = set()
    for name in names:
        for part in _NAME_SPLIT.split(unicodedata.normalize("NFKC", name).lower()):
            if len(part) >= 2:
                parts.add(part)
    return parts


def normalise_author(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).lower().replace("_", " ").split())


def keyword_tokens(
    keywords: Iterable[str],
    *,
    author_names: Collection[str] = (),
    own_author_parts: Collection[str] = (),
    protected: Collection[str] = (),
) -> list[str]:
    """Rules 2-4 for one image: raw `dc:subject` keywords -> cleaned, synonym-mapped tokens.

    `author_names`: normalised multi-word author names of the whole collection (dropped when a
    keyword equals one). `own_author_parts`: word parts of this image's own author names
    (dropped as tokens unless in `protected`, the category folder names).
    """
    out: list[str] = []
    for keyword in keywords:
        whole = normalise_author(keyword)
        if not whole or whole in author_names or clean_token(keyword) in META_KEYWORDS:
            continue
        for raw in _SPLIT.split(keyword):
            token = clean_token(raw)
            if not token or is_junk(token):
                continue
            token = SYNONYMS.get(token, token)
            if token in META_KEYWORDS:
                continue
            if token in own_author_parts and token not in protected:
                continue
            out.append(token)
    return out


def folder_tokens(category: str) -> list[str]:
    """Rule 1: `animals/mammals/big_cats` -> ["animals", "mammals", "big cats"] (pre-singular)."""
    out: list[str] = []
    for part in category.split("/"):
        if not part or part.lower() in DROP_FOLDERS:
            continue
        token = clean_token(part)
        if not token or is_junk(token):
            continue
        token = SYNONYMS.get(token, token)
        if token in META_KEYWORDS:
            continue
        out.append(token)
    return out


def _singular_candidates(word: str) -> list[str]:
    if len(word) <= 3 or not word.endswith("s") or word.endswith("ss"):
        return []
    out = []
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    if word.endswith(("ches", "shes", "xes", "sses", "oes")):
        out.append(word[:-2])
    out.append(word[:-1])
    return out


def build_singular_map(vocabulary: Iterable[str]) -> dict[str, str]:
    """Rule 5: plural label -> singular label, only where the singular is itself in use."""
    vocab = set(vocabulary)
    mapping: dict[str, str] = {}
    for label in vocab:
        if " and " in f" {label} ":
            continue
        head, _, last = label.rpartition(" ")
        if last in PLURAL_EXCEPTIONS:
            continue
        for cand in _singular_candidates(last):
            singular = f"{head} {cand}" if head else cand
            if singular in vocab or (head and cand in vocab):
                mapping[label] = singular
                break
    return mapping


def apply_singular(labels: Iterable[str], mapping: dict[str, str]) -> list[str]:
    """Map plurals to singulars and de-duplicate, keeping first-seen order."""
    seen: dict[str, None] = {}
    for label in labels:
        seen.setdefault(mapping.get(label, label), None)
    return list(seen)
