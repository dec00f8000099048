"""The README's tables stay true: the error table lists every error code the service can
return, with its status, and nothing it cannot (the codes are collected from the code itself);
the limits table names real settings with their defaults."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from mltag_artifact.preprocess import IMAGE_ERRORS
from service.api.errors import _HTTP_CODES, HTTP_ERROR_FALLBACK, IMAGE_ERROR_STATUS

REPO = Path(__file__).resolve().parents[2]

# Calls that carry (status, code) and the positions of those two arguments.
_CALLS = {
    "ApiError": (0, 1),
    "Refusal": (0, 1),
    "_refusal": (0, 1),
    "_reply": (2, 3),
    "error_response": (1, 2),
}


def codes_in_code() -> dict[str, set[int | None]]:
    """code -> statuses, from every ApiError / Refusal / _reply / error_response call with a
    literal code under service/, the contract's image errors (as the service maps them), the
    framework's HTTP errors, and per-image `{"code": ...}` results (status None)."""
    found: dict[str, set[int | None]] = defaultdict(set)
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in _CALLS:
                    si, ci = _CALLS[name]
                    if len(node.args) > ci and isinstance(node.args[ci], ast.Constant):
                        status = node.args[si]
                        value = status.value if isinstance(status, ast.Constant) else None
                        found[node.args[ci].value].add(value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "code"
                        and isinstance(value, ast.Constant)
                    ):
                        found[value.value].add(None)
    for cls in IMAGE_ERRORS:
        found[cls.code].add(IMAGE_ERROR_STATUS[cls.code])
    for status, code in _HTTP_CODES.items():
        found[code].add(status)
    found[HTTP_ERROR_FALLBACK].add(None)
    return found


def codes_in_readme() -> dict[str, set[str]]:
    """code -> statuses from the README's error table (rows `| status | codes | when |`)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Errors and limits", 1)[1].split("\n### ", 1)[0]
    table: dict[str, set[str]] = defaultdict(set)
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("status", "---"):
            for code in re.findall(r"`([a-z0-9_]+)`", cells[1]):
                table[code].add(cells[0])
    return table


def test_every_code_is_documented_with_its_status() -> None:
    code, readme = codes_in_code(), codes_in_readme()
    assert len(code) > 25  # the collection works
    assert sorted(set(code) - set(readme)) == [], "codes the README does not list"
    assert sorted(set(readme) - set(code)) == [], "README codes the service never returns"
    for name, statuses in code.items():
        for status in statuses - {None}:
            assert str(status) in readme[name], f"{name}: status {status} not in the README"


def test_per_image_codes_are_documented() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = text.split("one image's problem is reported in its own result", 1)[1][:400]
    listed = set(re.findall(r"`([a-z0-9_]+)`", paragraph))
    assert listed == {cls.code for cls in IMAGE_ERRORS} | {"model_error"}


def test_limits_table_names_real_settings_with_their_defaults() -> None:
    from service.settings import Settings

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Limits", 1)[1].split("\n### ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    fields = {name.upper() for name in Settings.model_fields}
    assert named and named <= fields, named - fields
    defaults = Settings()
    for name in named:  # the number in the row is the field's default
        row = next(line for line in table.splitlines() if f"`{name}`" in line)
        value = getattr(defaults, name.lower())
        shown = {
            "MAX_BODY_BYTES": f"{value // 2**20} MiB",
            "MAX_IMAGE_PIXELS": f"{value // 1_000_000} Mpx",
            "MAX_HEADER_LINE_BYTES": f"{value // 1024} KiB",
            "MAX_HEADER_BYTES": f"{value // 1024} KiB",
            "MIN_UPLOAD_BYTES_PER_S": f"{int(value) // 1024} KiB/s",
            "MAX_IMAGE_SIDE": f"{value:,} px",
            "MAX_CONNECTIONS": f"{value}",
            "MAX_ASPECT_RATIO": f"{value:g} : 1",
            "UPLOAD_GRACE_S": f"{value:g} s",
        }.get(name, f"{value:g}" if isinstance(value, float) else str(value))
        assert shown in row, f"{name}: default {value} not shown in: {row}"
