"""`train.regime=frozen`: the pretrained backbone is never trained, so its feature maps are
computed once and only the head trains, over the cache. On a CPU this is the cheap regime:
one backbone forward per image (and its mirror) for the whole run instead of a forward and a
backward per image per epoch. Results:
benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.

What differs from `full`: augmentation is the horizontal flip only (each training image is
cached as itself and mirrored; each epoch picks one view per image); RandAugment and Cutout do
not apply. Everything after training (checkpoint selection, thresholds, test, export) is the
same, and the run's checkpoints hold the whole classifier, so `export` needs nothing special.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import LabelledSet
from .data.loaders import eval_loader
from .data.transforms import preprocessing_for
from .engine import to_device, train_one_epoch
from .metrics import evaluate_scores
from .models import MultilabelClassifier

FeatureBatches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class HeadOnly(nn.Module):
    """The classifier's head on cached feature maps: what the training step calls."""

    def __init__(self, classifier: MultilabelClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.head(features)  # (B, C)


@torch.inference_mode()
def cache_features(
    backbone: nn.Module,
    data: LabelledSet,
    loader: Any,
    device: torch.device,
    mirrored: bool,
    channels_last: bool = False,
) -> torch.Tensor:
    """(N, views, D, h, w) float16 feature maps of `data`'s images in order; views: the image,
    and with `mirrored` its horizontal mirror."""
    backbone.eval()
    chunks = []
    for x, _ in loader:
        x = to_device(x, device, channels_last)
        views = [backbone(x)] + ([backbone(x.flip(-1))] if mirrored else [])  # (B, D, h, w)
        chunks.append(torch.stack(views, dim=1).half().cpu())
    feats = torch.cat(chunks)
    if feats.shape[0] != len(data.images):  # pragma: no cover - the loader keeps every image
        raise RuntimeError(f"cached {feats.shape[0]} of {len(data.images)} images")
    return feats


def feature_batches(
    feats: torch.Tensor, targets: torch.Tensor, batch: int, steps: int, generator: torch.Generator
) -> FeatureBatches:
    """`steps` shuffled batches, one random view per image (the mirror as augmentation)."""
    n, views = feats.shape[0], feats.shape[1]
    order = torch.randperm(n, generator=generator)
    view = torch.randint(0, views, (n,), generator=generator)
    for i in range(steps):
        idx = order[i * batch : (i + 1) * batch]
        yield feats[idx, view[idx]].float(), targets[idx]


class FrozenRegime:
    """The cache and the head-only epoch of a `_Training` whose regime is `frozen`."""

    def __init__(self, training: Any, splits_train: LabelledSet, splits_val: LabelledSet) -> None:
        cfg, compute = training.cfg, training.compute
        model: MultilabelClassifier = training.state.model
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        prep = preprocessing_for(cfg.data)
        batch = cfg.train.eval_batch()
        t0 = time.perf_counter()
        self.train_x = cache_features(
            model.backbone, splits_train,
            eval_loader(splits_train, prep, batch, cfg.data.num_workers), compute.device, True,
            compute.channels_last,
        )  # fmt: skip
        self.val_x = cache_features(
            model.backbone, splits_val,
            eval_loader(splits_val, prep, batch, cfg.data.num_workers), compute.device, False,
            compute.channels_last,
        )  # fmt: skip
        self.cache_seconds = time.perf_counter() - t0
        self.train_y = torch.from_numpy(np.asarray(splits_train.targets)).float()
        self.val_y = np.asarray(splits_val.targets)
        self.steps = len(training.train_loader)  # the schedule was sized for these
        if cfg.train.max_steps_per_epoch:
            self.steps = min(self.steps, cfg.train.max_steps_per_epoch)
        training.step = dataclasses.replace(
            training.step, model=HeadOnly(model), channels_last=False
        )
        training.log(
            f"frozen regime: cached {len(self.train_x)}x{self.train_x.shape[1]} train and "
            f"{len(self.val_x)} val feature maps {tuple(self.train_x.shape[2:])} in "
            f"{self.cache_seconds:.0f} s"
        )

    def epoch(self, training: Any, seed: int) -> Any:
        g = torch.Generator().manual_seed(seed)
        batches = feature_batches(
            self.train_x, self.train_y, training.cfg.train.batch_size, self.steps, g
        )
        return train_one_epoch(training.step, batches, None, None)

    @torch.inference_mode()
    def val_map(self, model: MultilabelClassifier, batch: int = 256) -> float:
        model.eval()
        outs = [
            model.probabilities(model.head(self.val_x[i : i + batch, 0].float()))
            for i in range(0, len(self.val_x), batch)
        ]
        return evaluate_scores(torch.cat(outs).numpy(), self.val_y).mAP
