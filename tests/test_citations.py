"""The repository cites only its own files: every reference to a document under docs/ or to
benchmarks/RESULTS.md (with its `#anchor`) in the code, configs, tests and docs exists, and
nothing points at notes outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITING = [
    *sorted((REPO / "model_training").rglob("*.py")),
    *sorted((REPO / "service").rglob("*.py")),
    *sorted((REPO / "mltag_artifact").rglob("*.py")),
    *sorted((REPO / "benchmarks").glob("*.py")),
    *sorted((REPO / "configs").glob("*.yaml")),
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "README.md",
]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
REFERENCE = re.compile(r"((?:docs|benchmarks)/[\w./-]+\.md)(#[\w-]+)?")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]*)\)")
OUTSIDE = ("method.md §", "perf-notes", "perf notes", "../shared", "shared/docs")


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (fenced code blocks skipped)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    fenced = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)  # repeats: -1, -2...
            seen[slug] = seen.get(slug, 0) + 1
    return found


def references(path: Path) -> list[tuple[Path, str | None]]:
    """(file, anchor or None) of every repository document `path` cites."""
    text = path.read_text(encoding="utf-8")
    refs = [(REPO / f, a[1:] if a else None) for f, a in REFERENCE.findall(text) if "/" in f]
    if path.suffix == ".md":
        for target in MARKDOWN_LINK.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            refs.append(((path.parent / file).resolve() if file else path, anchor or None))
    return refs


def test_anchor_slugs_follow_github() -> None:
    assert "the-default-model-modelsdefault" in anchors(RESULTS)
    assert "channels_last-training" in anchors(RESULTS)


def test_cited_documents_and_anchors_exist() -> None:
    broken = []
    for path in [*CITING, RESULTS]:  # RESULTS.md links between its own sections
        for file, anchor in references(path):
            if not file.is_file():
                broken.append(f"{path.relative_to(REPO)}: {file} does not exist")
            elif anchor is not None and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{path.relative_to(REPO)}: no #{anchor} in {file.name}")
    assert not broken, broken


def test_nothing_points_outside_the_repository() -> None:
    outside = [
        f"{path.relative_to(REPO)}: {s!r}"
        for path in CITING
        if path.name != "test_citations.py"  # names the forbidden strings
        for s in OUTSIDE
        if s in path.read_text(encoding="utf-8")
    ]
    assert not outside, outside


def test_method_doc_is_cited_by_the_code() -> None:
    cited = {
        a for p in CITING if p.suffix == ".py" for f, a in references(p) if f.name == "method.md"
    }
    assert {"training-recipe", "evaluation", "gcn-branch", "scores-at-inference"} <= cited
