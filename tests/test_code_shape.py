"""The packages' functions stay short: none longer than MAX_LINES, counted from the `def` line
to the last line (docstring and nested functions included), so each one reads on one screen;
long ones were where several jobs hid in one place. `python -m tests.test_code_shape` lists
the longest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "mltag_artifact": 30,
    "mltag_batch": 30,
    "model_training": 300,
    "service": 150,
}  # with at least
MAX_LINES = 60


def function_lengths(root: Path, base: Path = REPO) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function and method under `root`, longest first;
    paths relative to `base`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(base)}:{node.lineno} {node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, reverse=True)


@pytest.mark.parametrize(("package", "functions"), sorted(PACKAGES.items()))
def test_no_function_is_longer_than_the_limit(package: str, functions: int) -> None:
    lengths = function_lengths(REPO / package)
    assert len(lengths) > functions  # the walk sees the package
    too_long = [f"{where}: {n} lines" for n, where in lengths if n > MAX_LINES]
    assert not too_long, too_long


def test_the_count_includes_docstrings_and_nested_functions(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        'def outer():\n    """Doc\n    string."""\n\n    def inner():\n        return 1\n\n'
        "    return inner\n\n\nclass C:\n    async def method(self):\n        pass\n"
    )
    got = {where.split()[-1]: n for n, where in function_lengths(tmp_path, tmp_path)}
    assert got == {"outer": 8, "inner": 2, "method": 2}


if __name__ == "__main__":
    for package in PACKAGES:
        for n, where in function_lengths(REPO / package)[:5]:
            print(f"{n:4d}  {where}")
