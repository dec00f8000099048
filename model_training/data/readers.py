"""Annotation readers: COCO JSON, Pascal VOC, CSV and JSONL -> one `LabelledSet`.

Targets are int8 (N, C): 1 present, 0 absent, -1 ignore (excluded from loss and metrics).
The label vocabulary (and its order) comes from `labels=` when given (validation and test
files are always read against the training vocabulary), else from the file: COCO category order
by id, sorted label names for VOC/CSV/JSONL, or a `labels.txt` (one per line) next to a
CSV/JSONL file.

Bad records raise `DataError` naming the file and line (COCO: the array index) — or, with
`skip_bad=True`, are skipped and counted in `LabelledSet.skipped`.

Format details
- COCO: an image's labels are the categories of its annotations; images without annotations
  are negatives for every label (`empty_labels`). An annotation with `"ignore": true` makes its
  category "ignore" for that image unless a normal annotation of the category is present.
  Image paths are `file_name` relative to `images_root` (default: the JSON file's folder).
- VOC: pass `<root>/ImageSets/Main/<split>.txt`; boxes come from `<root>/Annotations/<id>.xml`
  and images from `<root>/JPEGImages` (or `images_root`). Objects marked difficult, by
  `voc_difficult`: `ignore` (default, the VOC evaluation convention: the label is -1 unless a
  non-difficult object of the class is also present), `positive`, or `negative` (dropped).
- CSV: rows `path,labels[,ignore]`, the labels field split on `label_sep` (default `;`); an
  optional header row `path,labels` is skipped. Paths relative to `images_root` (default: the
  CSV file's folder).
- JSONL: one `{"image": path, "labels": [...], "ignore": [...]}` object per line (`ignore`
  optional); paths relative to `images_root` (default: the JSONL file's folder).
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

EmptyPolicy = Literal["keep", "drop", "error"]
Difficult = Literal["ignore", "positive", "negative"]


class DataError(ValueError):
    """Bad annotation data; the message names the file and the line (or array index)."""


@dataclass
class LabelledSet:
    labels: list[str]
    images: list[Path]
    targets: np.ndarray  # (N, C) int8 in {1, 0, -1}
    sources: list[str]  # "file:line" for each image, for error messages
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int] | np.ndarray) -> LabelledSet:
        idx = np.asarray(index, dtype=np.int64)
        return LabelledSet(
            labels=self.labels,
            images=[self.images[i] for i in idx],
            targets=self.targets[idx],
            sources=[self.sources[i] for i in idx],
            skipped=Counter(self.skipped),
        )

    def describe(self) -> str:
        pos = (self.targets > 0).sum()
        ign = (self.targets < 0).sum()
        text = f"{len(self)} images, {len(self.labels)} labels, {pos} positives, {ign} ignored"
        if self.skipped:
            text += ", skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return text


@dataclass
class _Record:
    image: Path
    positive: set[str]
    ignore: set[str]
    source: str


class _Collector:
    """Shared validation: missing images, unknown labels, empty label sets, skip-and-count."""

    def __init__(
        self,
        labels: Sequence[str] | None,
        empty_labels: EmptyPolicy,
        skip_bad: bool,
        verify_images: bool,
    ) -> None:
        self.fixed = list(labels) if labels is not None else None
        self.empty_labels = empty_labels
        self.skip_bad = skip_bad
        self.verify_images = verify_images
        self.records: list[_Record] = []
        self.skipped: Counter[str] = Counter()

    def bad(self, reason: str, message: str) -> None:
        if not self.skip_bad:
            raise DataError(message + " (set data.skip_bad=true to skip and count such records)")
        self.skipped[reason] += 1

    def add(self, image: Path, positive: set[str], ignore: set[str], source: str) -> None:
        if not image.is_file():
            self.bad("missing image", f"{source}: image not found: {image}")
            return
        if self.verify_images and not _readable(image):
            self.bad("unreadable image", f"{source}: cannot decode image {image}")
            return
        if self.fixed is not None:
            unknown = sorted((positive | ignore) - set(self.fixed))
            if unknown:
                self.bad(
                    "unknown label",
                    f"{source}: unknown label(s) {unknown}; known labels: {self.fixed}",
                )
                return
        ignore = ignore - positive
        if not positive and not ignore:
            if self.empty_labels == "drop":
                self.skipped["no labels (dropped)"] += 1
                return
            if self.empty_labels == "error":
                self.bad("no labels", f"{source}: image {image} has no labels")
                return
        self.records.append(_Record(image, positive, ignore, source))

    def finish(self, vocabulary: Sequence[str] | None = None) -> LabelledSet:
        labels = self.fixed if self.fixed is not None else list(vocabulary or [])
        if not labels:
            labels = sorted({lab for r in self.records for lab in r.positive | r.ignore})
        if not labels:
            raise DataError("no labels found in the annotations")
        index = {lab: i for i, lab in enumerate(labels)}
        targets = np.zeros((len(self.records), len(labels)), dtype=np.int8)
        for row, r in enumerate(self.records):
            for lab in r.ignore:
                targets[row, index[lab]] = -1
            for lab in r.positive:
                targets[row, index[lab]] = 1
        return LabelledSet(
            labels=labels,
            images=[r.image for r in self.records],
            targets=targets,
            sources=[r.source for r in self.records],
            skipped=self.skipped,
        )


def _readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def _labels_file(path: Path) -> list[str] | None:
    candidate = path.parent / "labels.txt"
    if candidate.is_file():
        names = [ln.strip() for ln in candidate.read_text(encoding="utf-8").splitlines()]
        return [n for n in names if n]
    return None


def read_coco(
    path: str | os.PathLike[str],
    images_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    empty_labels: EmptyPolicy = "keep",
    skip_bad: bool = False,
    verify_images: bool = False,
) -> LabelledSet:
    p = Path(path)
    root = Path(images_root) if images_root else p.parent
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON: {e.msg}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{p}: a COCO file needs a list under {key!r}")
    categories: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        try:
            categories[int(cat["id"])] = str(cat["name"]).strip()
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{p}: categories[{i}] needs an integer 'id' and a 'name'") from None
    names = [categories[k] for k in sorted(categories)]
    if len(set(names)) != len(names):
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        raise DataError(f"{p}: duplicate category names {dup}")
    col = _Collector(labels, empty_labels, skip_bad, verify_images)
    images: dict[int, tuple[int, str]] = {}
    for i, im in enumerate(doc["images"]):
        try:
            images[int(im["id"])] = (i, str(im["file_name"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{p}: images[{i}] needs an integer 'id' and a 'file_name'") from None
    positive: dict[int, set[str]] = {k: set() for k in images}
    ignore: dict[int, set[str]] = {k: set() for k in images}
    for i, ann in enumerate(doc["annotations"]):
        src = f"{p}: annotations[{i}]"
        try:
            image_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            col.bad("bad annotation", f"{src} needs integer 'image_id' and 'category_id'")
            continue
        if image_id not in images:
            col.bad("bad annotation", f"{src} refers to unknown image_id {image_id}")
            continue
        if cat_id not in categories:
            col.bad("bad annotation", f"{src} refers to unknown category_id {cat_id}")
            continue
        target = ignore if ann.get("ignore") else positive
        target[image_id].add(categories[cat_id])
    for image_id, (i, file_name) in images.items():
        col.add(root / file_name, positive[image_id], ignore[image_id], f"{p}: images[{i}]")
    return col.finish(names)


def read_voc(
    path: str | os.PathLike[str],
    images_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    difficult: Difficult = "ignore",
    empty_labels: EmptyPolicy = "keep",
    skip_bad: bool = False,
    verify_images: bool = False,
) -> LabelledSet:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"VOC image set not found: {p} (pass <root>/ImageSets/Main/<split>.txt)")
    root = p.parent.parent.parent
    image_dir = Path(images_root) if images_root else root / "JPEGImages"
    col = _Collector(labels, empty_labels, skip_bad, verify_images)
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        image_id = line.strip().split()[0] if line.strip() else ""
        if not image_id:
            continue
        src = f"{p}:{number}"
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(xml_path)
        except (FileNotFoundError, ET.ParseError) as e:
            col.bad("bad annotation", f"{src}: cannot read {xml_path}: {e}")
            continue
        file_name = tree.findtext("filename") or f"{image_id}.jpg"
        pos: set[str] = set()
        hard: set[str] = set()
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if not name:
                continue
            is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
            if is_difficult and difficult != "positive":
                if difficult == "ignore":
                    hard.add(name)
                continue
            pos.add(name)
        col.add(image_dir / file_name, pos, hard, src)
    return col.finish()


def read_csv(
    path: str | os.PathLike[str],
    images_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    label_sep: str = ";",
    empty_labels: EmptyPolicy = "keep",
    skip_bad: bool = False,
    verify_images: bool = False,
) -> LabelledSet:
    p = Path(path)
    root = Path(images_root) if images_root else p.parent
    if labels is None:
        labels = _labels_file(p)
    col = _Collector(labels, empty_labels, skip_bad, verify_images)

    def split(field_text: str) -> set[str]:
        return {x.strip() for x in field_text.split(label_sep) if x.strip()}

    try:
        handle = p.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {p}") from None
    with handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and row[0].strip().lower() in ("path", "image", "file", "filename"):
                continue
            src = f"{p}:{number}"
            if len(row) not in (2, 3) or not row[0].strip():
                col.bad("bad row", f"{src}: expected 'path,labels[,ignore]', got {row}")
                continue
            ignore = split(row[2]) if len(row) == 3 else set()
            col.add(root / row[0].strip(), split(row[1]), ignore, src)
    return col.finish()


def read_jsonl(
    path: str | os.PathLike[str],
    images_root: str | Path | None = None,
    labels: Sequence[str] | None = None,
    empty_labels: EmptyPolicy = "keep",
    skip_bad: bool = False,
    verify_images: bool = False,
) -> LabelledSet:
    p = Path(path)
    root = Path(images_root) if images_root else p.parent
    if labels is None:
        labels = _labels_file(p)
    col = _Collector(labels, empty_labels, skip_bad, verify_images)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {p}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        src = f"{p}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            col.bad("bad row", f"{src}: not valid JSON: {e.msg}")
            continue
        image = obj.get("image") if isinstance(obj, dict) else None
        labs = obj.get("labels", []) if isinstance(obj, dict) else None
        ign = obj.get("ignore", []) if isinstance(obj, dict) else None
        if (
            not isinstance(image, str)
            or not image
            or not isinstance(labs, list)
            or not isinstance(ign, list)
            or not all(isinstance(x, str) for x in labs + ign)
        ):
            col.bad(
                "bad row",
                f'{src}: expected {{"image": str, "labels": [str, ...], "ignore": [str, ...]}}',
            )
            continue
        col.add(root / image, {x.strip() for x in labs}, {x.strip() for x in ign}, src)
    return col.finish()
