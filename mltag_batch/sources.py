"""What to tag: a directory (recursive), a glob, one image, or a manifest file (JSONL, CSV or
Parquet with a `path` or `uri` column and an optional `id` column), listed once on the driver
into (id, path) pairs. An id names an input across runs: resuming skips the ids already in the
output, so ids must be unique and stable."""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from . import storage

# Image file extensions picked up from directories and globs (case-insensitive). What decodes
# is decided by the contract's preprocessing; anything else becomes an error row.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
MANIFEST_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PATH_COLUMNS = ("path", "uri")


class SourceError(Exception):
    """The input cannot be listed (message says why)."""


@dataclass(frozen=True)
class Inputs:
    """Inputs in order; `ids[i]` names `paths[i]`."""

    ids: list[str]
    paths: list[str]
    kind: str  # directory | glob | image | manifest

    def __len__(self) -> int:
        return len(self.ids)


def list_inputs(source: str) -> Inputs:
    """List `source`; raise SourceError when it names nothing usable."""
    if _has_magic(source):
        inputs = _glob(source)
    elif storage.is_dir(source):
        inputs = _directory(source)
    elif not storage.exists(source):
        raise SourceError(f"input {source!r} does not exist")
    elif _suffix(source) in MANIFEST_FORMATS:
        inputs = _manifest(source, MANIFEST_FORMATS[_suffix(source)])
    elif _suffix(source) in IMAGE_EXTENSIONS:
        inputs = Inputs([_basename(source)], [source], "image")
    else:
        raise SourceError(
            f"input {source!r} is neither a directory, a glob, an image nor a manifest "
            f"({', '.join(sorted(MANIFEST_FORMATS))})"
        )
    if not inputs.ids:
        raise SourceError(f"no images in {source!r} (extensions: {_extensions_text()})")
    _check_unique(inputs.ids, source)
    return inputs


def _suffix(path: str) -> str:
    name = _basename(path)
    return name[name.rfind(".") :].lower() if "." in name else ""


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _extensions_text() -> str:
    return " ".join(sorted(IMAGE_EXTENSIONS))


def _is_image(path: str) -> bool:
    return _suffix(path) in IMAGE_EXTENSIONS


def _relative(path: str, root: str) -> str:
    """`path` below `root`, with forward slashes: the id of a listed file."""
    rel = path[len(root.rstrip("/")) :].lstrip("/")
    return rel.replace("\\", "/")


def _directory(root: str) -> Inputs:
    # Absolute (workers elsewhere resolve no cwd), in the form listed paths take.
    root = storage.normalize(root)
    paths = sorted(p for p in storage.walk(root) if _is_image(p))
    return Inputs([_relative(p, root) for p in paths], paths, "directory")


# ------------------------------------------------------------------------------------ globs
_MAGIC = re.compile(r"[*?\[]")


def _has_magic(path: str) -> bool:
    return bool(_MAGIC.search(path.split("://", 1)[-1]))


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell-style pattern -> regex: `*` and `?` stay within one path segment, `**` spans
    any number of them (as in `glob.glob(..., recursive=True)`), `[...]` is a character set."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _glob(pattern: str) -> Inputs:
    """Files matching `pattern`; ids relative to the pattern's fixed leading directory."""
    head = pattern[: _MAGIC.search(pattern).start()]  # type: ignore[union-attr]
    root = head[: head.rfind("/")] or "/"
    # Absolute, in the form listed paths take, so matches compare like for like.
    pattern = storage.normalize(root) + pattern[len(root) :]
    root = storage.normalize(root)
    if not storage.is_dir(root):
        return Inputs([], [], "glob")
    regex = glob_regex(pattern)
    paths = sorted(p for p in storage.walk(root) if regex.match(p) and _is_image(p))
    return Inputs([_relative(p, root) for p in paths], paths, "glob")


# -------------------------------------------------------------------------------- manifests
def _manifest(source: str, fmt: str) -> Inputs:
    table = _read_table(source, fmt)
    column = next((c for c in PATH_COLUMNS if c in table.column_names), None)
    if column is None:
        raise SourceError(
            f"{source}: no `path` or `uri` column (columns: {', '.join(table.column_names)})"
        )
    paths = _strings(table, column, source)
    ids = _strings(table, "id", source) if "id" in table.column_names else list(paths)
    base = storage.parent(source)
    resolved = [
        p if storage.is_uri(p) or p.startswith("/") else storage.join(base, p) for p in paths
    ]
    return Inputs(ids, resolved, "manifest")


def _read_table(source: str, fmt: str) -> pa.Table:
    data = storage.read_bytes(source)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(data))
        if fmt == "csv":
            import pyarrow.csv as pacsv

            # Every column as text: ids like 007 must keep their zeros.
            options = pacsv.ConvertOptions(column_types=_all_strings(data))
            return pacsv.read_csv(io.BytesIO(data), convert_options=options)
        import pyarrow.json as pajson

        return pajson.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise SourceError(f"{source}: cannot read as {fmt}: {e}") from None


def _all_strings(csv_data: bytes) -> dict[str, pa.DataType]:
    import csv

    header = next(csv.reader(io.StringIO(csv_data[:65536].decode("utf-8", "replace"))), [])
    return {name: pa.string() for name in header}


def _strings(table: pa.Table, column: str, source: str) -> list[str]:
    col = table.column(column)
    nulls = col.null_count
    if nulls:
        first = pc.index(pc.is_null(col), True).as_py()
        raise SourceError(
            f"{source}: column `{column}` is empty in {nulls} row(s), first row {first}"
        )
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    values: list[str] = col.to_pylist()
    if column != "id" and any(not v for v in values):
        raise SourceError(f"{source}: column `{column}` has an empty path")
    return values


def _check_unique(ids: list[str], source: str) -> None:
    if len(set(ids)) == len(ids):
        return
    dups = [i for i, n in Counter(ids).items() if n > 1]
    raise SourceError(
        f"{source}: {len(dups)} id(s) used more than once, e.g. {dups[0]!r}: every input needs "
        "its own id (resuming skips the ids already in the output)"
    )
