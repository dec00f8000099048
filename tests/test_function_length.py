"""Small functions: none in the packages longer than about a screen (60 lines, def to last
line, docstring included). Long ones were where several jobs hid in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 60
PACKAGES = ["mltag_artifact", "mltag_batch", "service"]


def function_lengths(package: str) -> list[tuple[int, str]]:
    rows = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                rows.append((length, f"{path.relative_to(REPO)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_long_functions(package: str) -> None:
    lengths = function_lengths(package)
    assert lengths, "no functions found: the walk is broken"
    assert [row for row in lengths if row[0] > LIMIT] == []
