"""The JSONL annotation format the builders write and `model_training.data` reads.

One object per line, `{"image": "relative/path.png", "labels": ["a", "b"]}`; image paths are
relative to the JSONL file's folder. `labels.txt` holds the label order, one per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from exc
    return rows


def write_labels(path: Path, labels: Iterable[str]) -> None:
    path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def read_labels(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
