"""The training run directory: its layout, what training writes into it, and how `--resume`,
`mltag-train evaluate --run` and export read it back. No other module opens a file inside a
run directory by name.

Layout:
    config.yaml          resolved config (everything needed to rebuild the model)
    labels.txt           label order of the model's outputs
    split.json           the validation images (a held-out split is recorded here)
    metrics.json         {"epochs": [...per epoch...], "final": {...}}
    per_class_ap.csv     label, positives in train, val AP, test AP, threshold
    thresholds.json      per-label F1-optimal thresholds, calibrated on the validation split
    curves.png           training loss, learning rate, validation mAP (raw and EMA)
    pr_val.png, pr_test.png   precision-recall curves
    checkpoints/last.pt  everything `--resume` needs (written every epoch)
    checkpoints/best.pt  the selected weights (raw or EMA) + labels + config + which epoch
    train.log            the log

Checkpoints are written to a temporary file that then replaces the old one, so an interrupted
run never leaves half a checkpoint behind.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, load_config
from .data import LabelledSet, load_splits, read_annotations
from .models import MultilabelClassifier, build_model

# Reading a run is export's first step: its warnings go to export's log.
log = logging.getLogger("mltag.export")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class RunDirError(RuntimeError):
    """A run directory is missing or inconsistent, or the data it names cannot be read; the
    message says which."""


class RunDir:
    """The paths of one run directory, and the writers training uses."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.labels = self.root / "labels.txt"
        self.split = self.root / "split.json"
        self.metrics = self.root / "metrics.json"
        self.per_class = self.root / "per_class_ap.csv"
        self.thresholds = self.root / "thresholds.json"
        self.curves = self.root / "curves.png"
        self.log = self.root / "train.log"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def pr_curves(self, split: str) -> Path:
        return self.root / f"pr_{split}.png"

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def check_start(self, resume: bool) -> None:
        """A new run needs a directory without a run in it; a resumed one needs `last.pt`."""
        if not resume and self.last.exists():
            raise FileExistsError(
                f"{self.root} already holds a run; pass --resume or a new --output"
            )
        if resume and not self.last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.last}")

    def write_inputs(self, cfg: Config, labels: list[str], val_images: list[Path]) -> None:
        """What the run trains on: the resolved config, the label order, the validation split."""
        cfg.save(self.config)
        self.labels.write_text("\n".join(labels) + "\n", encoding="utf-8")
        doc = {"val": [str(p) for p in val_images]}
        self.split.write_text(json.dumps(doc, indent=1), encoding="utf-8")

    def save_last(self, checkpoint: dict[str, Any]) -> None:
        _save_atomically(checkpoint, self.last)

    def save_best(self, checkpoint: dict[str, Any]) -> None:
        _save_atomically(checkpoint, self.best)

    def load_last(self) -> dict[str, Any]:
        checkpoint: dict[str, Any] = torch.load(self.last, map_location="cpu", weights_only=False)
        return checkpoint

    def write_metrics(self, history: list[dict[str, Any]], final: dict[str, Any] | None) -> None:
        doc = {"epochs": history, "final": final}
        self.metrics.write_text(json.dumps(doc, indent=2, default=float), encoding="utf-8")

    def write_thresholds(self, labels: list[str], thresholds: np.ndarray) -> None:
        table = dict(zip(labels, thresholds.tolist(), strict=True))
        self.thresholds.write_text(json.dumps(table, indent=1), encoding="utf-8")

    def write_per_class(
        self,
        labels: list[str],
        train_positives: np.ndarray,
        val_ap: np.ndarray,
        test_ap: np.ndarray | None,
        thresholds: np.ndarray,
    ) -> None:
        """AP as a percentage with two decimals, empty where the split has no positive."""

        def percent(ap: float) -> str:
            return "" if np.isnan(ap) else f"{ap * 100:.2f}"

        with self.per_class.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["label", "train_positives", "val_AP", "test_AP", "threshold"])
            for c, label in enumerate(labels):
                test = test_ap[c] if test_ap is not None else float("nan")
                row = [label, int(train_positives[c]), percent(val_ap[c]), percent(test)]
                w.writerow([*row, f"{thresholds[c]:.4f}"])


class TrainLog:
    """Prints a line and appends it to `train.log`; silent where `path` is None (processes
    other than rank 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        print(message, flush=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(message + "\n")


def _save_atomically(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_trained(
    run: str | Path, device: torch.device | str = "cpu"
) -> tuple[MultilabelClassifier, Config, list[str], np.ndarray | None]:
    """The selected model of a run directory, its config, labels and thresholds (if any)."""
    rd = RunDir(run)
    if not rd.best.exists():
        raise FileNotFoundError(f"{rd.root}: no checkpoints/best.pt (is this a finished run?)")
    ckpt = torch.load(rd.best, map_location="cpu", weights_only=False)
    cfg = load_config(rd.config)
    labels = list(ckpt["labels"])
    model = build_model(cfg, labels, state=ckpt["model"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    thresholds = None
    if rd.thresholds.exists():
        table = json.loads(rd.thresholds.read_text(encoding="utf-8"))
        thresholds = np.array([table[label] for label in labels], dtype=np.float64)
    return model, cfg, labels, thresholds


@dataclass
class TrainedRun:
    """A finished run as export reads it: the selected model with everything around it."""

    directory: Path
    model: MultilabelClassifier
    config: Config
    labels: list[str]
    thresholds: np.ndarray | None
    final: dict[str, Any]  # metrics.json "final"
    per_class: list[dict[str, str]] = field(default_factory=list)  # per_class_ap.csv rows
    recorded_val: list[str] | None = None  # split.json "val", when the file exists

    @property
    def selected(self) -> dict[str, Any]:
        """Which weights best.pt holds: {"mAP", "epoch", "source": "raw" | "ema"}."""
        return dict(self.final.get("selected") or {})

    def validation_set(self, val_data: str | Path | None = None) -> LabelledSet:
        """The run's validation split (re-derived from its config: same files, same seed), or
        `val_data` (an annotation file in the run's format) when given."""
        cfg = self.config
        try:
            if val_data is not None:
                return read_annotations(cfg.data, val_data, self.labels)
            val = load_splits(cfg.data, seed=cfg.train.seed).val
        except (OSError, ValueError) as e:
            raise RunDirError(
                f"cannot read the run's validation data ({type(e).__name__}: {e}); export "
                "verifies the model on real validation images: make the run's data available "
                "or pass val_data (--val-data) pointing at an annotation file"
            ) from None
        if val.labels != self.labels:
            raise RunDirError("the validation data's labels differ from the run's labels")
        rederived = sorted(str(p) for p in val.images)
        if self.recorded_val is not None and sorted(self.recorded_val) != rederived:
            log.warning(
                "the validation split re-derived from %s differs from the one recorded in "
                "split.json (data changed since training?); verifying on the re-derived one",
                RunDir(self.directory).config,
            )
        return val

    def calibration_images(
        self, calib_data: str | Path | None, count: int, seed: int = 0
    ) -> list[Path]:
        """Up to `count` images for int8 calibration: a seeded random draw from the run's
        training split, or from `calib_data` (a directory of images or an annotation file)."""
        cfg = self.config
        try:
            if calib_data is None:
                images = load_splits(cfg.data, seed=cfg.train.seed).train.images
            elif Path(calib_data).is_dir():
                images = sorted(
                    p for p in Path(calib_data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                )
            else:
                images = read_annotations(cfg.data, calib_data, self.labels).images
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot read calibration data ({type(e).__name__}: {e})") from None
        if not images:
            raise RunDirError(f"no calibration images found ({calib_data or 'training split'})")
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(images))[: max(1, count)]
        return [images[i] for i in sorted(pick)]


def load_run(run_dir: str | Path) -> TrainedRun:
    """The selected checkpoint (raw or EMA, as training chose) with everything around it."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise RunDirError(f"run directory {rd.root} does not exist")
    try:
        model, cfg, labels, thresholds = load_trained(rd.root, "cpu")
    except (OSError, ValueError, KeyError) as e:  # missing files, invalid config.yaml
        raise RunDirError(f"cannot load the run in {rd.root}: {e}") from None
    if rd.labels.is_file():
        listed = [line for line in rd.labels.read_text(encoding="utf-8").splitlines() if line]
        if listed != labels:
            raise RunDirError(
                f"{rd.labels} lists {len(listed)} labels that differ from the checkpoint's "
                f"{len(labels)}: the run directory is inconsistent"
            )
    final: dict[str, Any] = {}
    if rd.metrics.is_file():
        final = json.loads(rd.metrics.read_text(encoding="utf-8")).get("final") or {}
    per_class: list[dict[str, str]] = []
    if rd.per_class.is_file():
        with rd.per_class.open(newline="", encoding="utf-8") as f:
            per_class = list(csv.DictReader(f))
    recorded = None
    if rd.split.is_file():
        recorded = json.loads(rd.split.read_text(encoding="utf-8")).get("val", [])
    return TrainedRun(rd.root, model, cfg, labels, thresholds, final, per_class, recorded)
