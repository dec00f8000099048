"""Read the RDF metadata (`dc:subject` keywords, authors, title) from an SVG file.

Only the `<metadata>` element is needed, so the file is parsed incrementally and parsing
stops at the end of the metadata; the drawing itself (sometimes megabytes of paths) is never
built into a tree. The standard library's expat parser does not fetch external entities.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_AUTHOR_TAGS = (DC + "creator", DC + "publisher", DC + "rights", DC + "contributor")
_SUBJECT_RE = re.compile(rb"<dc:subject>(.*?)</dc:subject>", re.S)
_LI_RE = re.compile(rb"<rdf:li>(.*?)</rdf:li>", re.S)


@dataclass(frozen=True)
class SvgMetadata:
    title: str = ""
    keywords: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=(), compare=False)


def _texts(element: ET.Element, tag: str) -> list[str]:
    return [(e.text or "").strip() for e in element.iter(tag) if (e.text or "").strip()]


def read_svg_metadata(path: str | Path) -> SvgMetadata:
    """Keywords (`dc:subject`, a `rdf:Bag` of `rdf:li` or plain text), authors and title.

    A malformed file falls back to a regular-expression scan of the subject block, and the
    parse error is recorded in `errors` rather than raised.
    """
    keywords: list[str] = []
    authors: list[str] = []
    title: str | None = None
    try:
        for _, element in ET.iterparse(str(path), events=("end",)):
            tag = element.tag
            if tag == DC + "subject":
                items = _texts(element, RDF + "li")
                if not items and (element.text or "").strip():
                    items = [(element.text or "").strip()]
                keywords.extend(items)
            elif tag in _AUTHOR_TAGS:
                authors.extend(_texts(element, DC + "title"))
            elif tag == DC + "title" and title is None:
                title = (element.text or "").strip()
            elif isinstance(tag, str) and tag.endswith("}metadata"):
                break
    except (ET.ParseError, UnicodeDecodeError) as exc:
        return _regex_fallback(path, str(exc))
    return SvgMetadata(
        title=title or "", keywords=tuple(keywords), authors=tuple(dict.fromkeys(authors))
    )


def _regex_fallback(path: str | Path, error: str) -> SvgMetadata:
    data = Path(path).read_bytes()
    keywords: list[str] = []
    for block in _SUBJECT_RE.findall(data):
        for item in _LI_RE.findall(block):
            text = item.decode("utf-8", "replace").strip()
            if text:
                keywords.append(text)
    return SvgMetadata(keywords=tuple(keywords), errors=(error,))
