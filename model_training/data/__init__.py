"""Dataset readers (COCO, VOC, CSV, JSONL), the validation split, transforms, torch dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import DataConfig
from ..stratify import stratified_holdout
from .dataset import MultilabelDataset
from .readers import DataError, LabelledSet, read_coco, read_csv, read_jsonl, read_voc


@dataclass
class Splits:
    train: LabelledSet
    val: LabelledSet
    test: LabelledSet | None


def read_annotations(
    data: DataConfig,
    path: str | os.PathLike[str],
    labels: list[str] | None = None,
    images_root: str | None = None,
) -> LabelledSet:
    """Read one annotation file in `data.format` (against `labels` when given); image paths
    are relative to `images_root`, else `data.images_root`, else the file's folder."""
    common = {
        "images_root": images_root or data.images_root,
        "labels": labels,
        "empty_labels": data.empty_labels,
        "skip_bad": data.skip_bad,
        "verify_images": data.verify_images,
    }
    if data.format == "coco":
        return read_coco(path, **common)  # type: ignore[arg-type]
    if data.format == "voc":
        return read_voc(path, difficult=data.voc_difficult, **common)  # type: ignore[arg-type]
    if data.format == "csv":
        return read_csv(path, label_sep=data.label_sep, **common)  # type: ignore[arg-type]
    if data.format == "jsonl":
        return read_jsonl(path, **common)  # type: ignore[arg-type]
    raise DataError(f"unknown data.format {data.format!r}; valid: coco, voc, csv, jsonl")


def load_splits(data: DataConfig, seed: int = 0) -> Splits:
    """Train, validation (a file, or a seeded stratified hold-out from train) and test."""
    if not data.train:
        raise DataError("data.train is not set: point it at the training annotations")
    train = read_annotations(data, data.train, data.labels)
    if data.val:
        val = read_annotations(data, data.val, train.labels, data.val_images_root)
    else:
        if data.val_fraction <= 0:
            raise DataError("no validation data: set data.val or data.val_fraction > 0")
        tr_idx, va_idx = stratified_holdout(train.targets, data.val_fraction, seed)
        if len(va_idx) == 0 or len(tr_idx) == 0:
            raise DataError(f"too few images ({len(train)}) to hold out a validation split")
        train, val = train.subset(tr_idx), train.subset(va_idx)
    test = (
        read_annotations(data, data.test, train.labels, data.test_images_root)
        if data.test
        else None
    )
    return Splits(train=train, val=val, test=test)


__all__ = [
    "DataError",
    "LabelledSet",
    "MultilabelDataset",
    "Splits",
    "load_splits",
    "read_annotations",
    "read_coco",
    "read_csv",
    "read_jsonl",
    "read_voc",
    "stratified_holdout",
]
