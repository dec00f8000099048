"""Reading a finished training run directory (the layout `trainer.fit` writes)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..data import LabelledSet, load_splits, read_annotations
from ..models import MultilabelClassifier
from ..trainer import load_trained

log = logging.getLogger("mltag.export")


class ExportError(RuntimeError):
    """The run cannot be exported, or the exported model failed verification."""


@dataclass
class TrainedRun:
    directory: Path
    model: MultilabelClassifier
    config: Config
    labels: list[str]
    thresholds: np.ndarray | None
    final: dict[str, Any]  # metrics.json "final"
    per_class: list[dict[str, str]] = field(default_factory=list)  # per_class_ap.csv rows

    @property
    def selected(self) -> dict[str, Any]:
        """Which weights best.pt holds: {"mAP", "epoch", "source": "raw" | "ema"}."""
        return dict(self.final.get("selected") or {})


def load_run(run_dir: str | Path) -> TrainedRun:
    """The selected checkpoint (raw or EMA, as training chose) with everything around it."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"run directory {run} does not exist")
    try:
        model, cfg, labels, thresholds = load_trained(run, "cpu")
    except (OSError, ValueError, KeyError) as e:  # missing files, invalid config.yaml
        raise ExportError(f"cannot load the run in {run}: {e}") from None
    labels_txt = run / "labels.txt"
    if labels_txt.is_file():
        listed = [line for line in labels_txt.read_text(encoding="utf-8").splitlines() if line]
        if listed != labels:
            raise ExportError(
                f"{labels_txt} lists {len(listed)} labels that differ from the checkpoint's "
                f"{len(labels)}: the run directory is inconsistent"
            )
    final: dict[str, Any] = {}
    metrics_path = run / "metrics.json"
    if metrics_path.is_file():
        final = json.loads(metrics_path.read_text(encoding="utf-8")).get("final") or {}
    per_class: list[dict[str, str]] = []
    csv_path = run / "per_class_ap.csv"
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8") as f:
            per_class = list(csv.DictReader(f))
    return TrainedRun(run, model, cfg, labels, thresholds, final, per_class)


def validation_set(run: TrainedRun, val_data: str | Path | None = None) -> LabelledSet:
    """The run's validation split (re-derived from its config: same files, same seed), or
    `val_data` (an annotation file in the run's format) when given."""
    cfg = run.config
    try:
        if val_data is not None:
            return read_annotations(cfg.data, val_data, run.labels)
        val = load_splits(cfg.data, seed=cfg.train.seed).val
    except (OSError, ValueError) as e:
        raise ExportError(
            f"cannot read the run's validation data ({type(e).__name__}: {e}); export verifies "
            "the model on real validation images: make the run's data available or pass "
            "val_data (--val-data) pointing at an annotation file"
        ) from None
    if val.labels != run.labels:
        raise ExportError("the validation data's labels differ from the run's labels")
    split_file = run.directory / "split.json"
    if split_file.is_file():
        recorded = json.loads(split_file.read_text(encoding="utf-8")).get("val", [])
        if sorted(recorded) != sorted(str(p) for p in val.images):
            log.warning(
                "the validation split re-derived from %s differs from the one recorded in "
                "split.json (data changed since training?); verifying on the re-derived one",
                run.directory / "config.yaml",
            )
    return val


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def calibration_images(
    run: TrainedRun, calib_data: str | Path | None, count: int, seed: int = 0
) -> list[Path]:
    """Up to `count` images for int8 calibration: a seeded random draw from the run's
    training split, or from `calib_data` (a directory of images or an annotation file)."""
    cfg = run.config
    try:
        if calib_data is None:
            images = load_splits(cfg.data, seed=cfg.train.seed).train.images
        elif Path(calib_data).is_dir():
            images = sorted(
                p for p in Path(calib_data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            images = read_annotations(cfg.data, calib_data, run.labels).images
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read calibration data ({type(e).__name__}: {e})") from None
    if not images:
        raise ExportError(f"no calibration images found ({calib_data or 'training split'})")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images))[: max(1, count)]
    return [images[i] for i in sorted(pick)]


def short_name(path: str | Path) -> str:
    """`<folder>/<file>`: names data without leaking the machine's absolute paths."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def dataset_name(cfg: Config) -> str:
    """A short, path-free name for the training data."""
    return short_name(cfg.data.train)
