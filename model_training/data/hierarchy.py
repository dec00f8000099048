"""The label hierarchy a data set carries: parents, aliases and a category per label.

Sources, first found wins:
- `data.hierarchy`: a JSON file `{"labels": {"cat": {"parents": ["animal"], "aliases": [],
  "category": "animals"}}}` (any field optional; labels not listed have none);
- `hierarchy.json` next to the training annotations (the OpenClipart-ML builder writes one
  from the library's category folders);
- COCO: each category's `supercategory` becomes the label's category.

The exporter writes it into the manifest (`label_info`), restricted to the model's labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mltag_artifact import LabelInfo

from ..config import DataConfig
from .readers import DataError

HIERARCHY_FILE = "hierarchy.json"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"hierarchy file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def read_hierarchy(path: str | Path) -> dict[str, LabelInfo]:
    """A hierarchy file (format above), validated field by field."""
    doc = _load_json(Path(path))
    entries = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise DataError(f"{path}: a hierarchy file needs an object under 'labels'")
    out: dict[str, LabelInfo] = {}
    for label, fields in entries.items():
        try:
            out[str(label)] = LabelInfo.model_validate(fields)
        except ValueError as e:
            raise DataError(f"{path}: label {label!r}: {e}") from None
    return out


def coco_supercategories(path: str | Path) -> dict[str, LabelInfo]:
    """COCO's `supercategory` of each category, as its category."""
    doc = _load_json(Path(path))
    out: dict[str, LabelInfo] = {}
    for cat in doc.get("categories", []) if isinstance(doc, dict) else []:
        name, group = cat.get("name"), cat.get("supercategory")
        if isinstance(name, str) and isinstance(group, str) and group.strip():
            out[name.strip()] = LabelInfo(category=group.strip())
    return out


def dataset_hierarchy(data: DataConfig) -> dict[str, LabelInfo]:
    """The hierarchy of the configured data set (see the module docstring); {} when none."""
    if data.hierarchy:
        return read_hierarchy(data.hierarchy)
    if not data.train:
        return {}
    beside = Path(data.train).parent / HIERARCHY_FILE
    if beside.is_file():
        return read_hierarchy(beside)
    if data.format == "coco":
        return coco_supercategories(data.train)
    return {}


def label_info_for(
    hierarchy: dict[str, LabelInfo], labels: Sequence[str]
) -> list[LabelInfo] | None:
    """One entry per model label, in output order, parents kept only where they are labels of
    the model (a pruned vocabulary may have lost them); None when nothing is known."""
    known = set(labels)
    out = []
    for label in labels:
        info = hierarchy.get(label, LabelInfo())
        parents = [p for p in dict.fromkeys(info.parents) if p in known and p != label]
        out.append(info.model_copy(update={"parents": parents}))
    if not any(i.parents or i.aliases or i.category for i in out):
        return None
    return out
