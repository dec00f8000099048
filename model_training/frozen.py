"""The cached regimes, `train.regime=frozen` and `train.regime=partial`: the first part of the
pretrained backbone is never trained, so its output is computed once and only the rest trains,
over the cache. `frozen` caches the whole backbone's feature maps and trains the head;
`partial` caches the output of all but the last `train.trainable_stages` stages and trains
those stages, the backbone's final conv and the head. On a CPU these are the cheap regimes:
the high-resolution early stages (most of a forward pass, and more of a backward one) run once
per image and view for the whole run. Results:
benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.

What differs from `full`: augmentation is the horizontal flip only (each training image is
cached as itself and mirrored; each epoch picks one view per image); RandAugment and Cutout do
not apply. The frozen stages' batch norms keep their pretrained statistics. Everything after
training (checkpoint selection, thresholds, test, export) is the same, and the run's
checkpoints hold the whole classifier, so `export` needs nothing special.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ConfigError
from .data import LabelledSet
from .data.loaders import eval_loader
from .data.transforms import preprocessing_for
from .engine import to_device, train_one_epoch
from .metrics import evaluate_scores
from .models import MultilabelClassifier

FeatureBatches = Iterator[tuple[torch.Tensor, torch.Tensor]]


# The stem and stages of timm's EfficientNet family (EfficientNet, -Lite, MixNet, ...):
# forward_features is conv_stem -> bn1 -> blocks (stages) -> conv_head -> bn2.
_STAGED = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


def split_backbone(backbone: nn.Module, trainable_stages: int) -> tuple[nn.Module, nn.Module]:
    """(frozen prefix, trainable rest) of `backbone` (a `Backbone`), so that
    rest(prefix(x)) == backbone(x). 0 trainable stages: the whole backbone is the prefix."""
    if trainable_stages == 0:
        return backbone, nn.Identity()
    body: Any = getattr(backbone, "body", None)  # timm's modules, typed loosely
    if not all(hasattr(body, name) for name in _STAGED) or not isinstance(
        body.blocks, nn.Sequential
    ):
        raise ConfigError(
            f"train.regime=partial needs a timm EfficientNet-family backbone (conv_stem, "
            f"blocks, conv_head), not {type(body).__name__}; use regime full or frozen"
        )
    stages = len(body.blocks)
    if trainable_stages > stages:
        raise ConfigError(f"train.trainable_stages={trainable_stages}: the backbone has {stages}")
    cut = stages - trainable_stages
    prefix = nn.Sequential(body.conv_stem, body.bn1, *body.blocks[:cut])
    rest = nn.Sequential(*body.blocks[cut:], body.conv_head, body.bn2)
    return prefix, rest


class CachedForward(nn.Module):
    """The trainable rest of the classifier on cached maps: what the training step calls."""

    def __init__(self, classifier: MultilabelClassifier, trainable_stages: int) -> None:
        super().__init__()
        self.classifier = classifier
        self.rest = split_backbone(classifier.backbone, trainable_stages)[1]

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        return self.classifier.head(self.rest(cached))  # (B, C)


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


class CachedRegime:
    """The cache and the epoch of a `_Training` whose regime is `frozen` or `partial`."""

    def __init__(self, training: Any, splits_train: LabelledSet, splits_val: LabelledSet) -> None:
        cfg, compute = training.cfg, training.compute
        model: MultilabelClassifier = training.state.model
        self.stages = cfg.train.trainable_stages if cfg.train.regime == "partial" else 0
        prefix, _ = split_backbone(model.backbone, self.stages)
        for p in prefix.parameters():
            p.requires_grad_(False)
        prep = preprocessing_for(cfg.data)
        batch = cfg.train.eval_batch()
        t0 = time.perf_counter()
        self.train_x = cache_features(
            prefix, splits_train,
            eval_loader(splits_train, prep, batch, cfg.data.num_workers), compute.device, True,
            compute.channels_last,
        )  # fmt: skip
        self.val_x = cache_features(
            prefix, splits_val,
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
            training.step,
            model=CachedForward(model, self.stages),
            channels_last=compute.channels_last and self.stages > 0,
        )
        training.log(
            f"{cfg.train.regime} regime: cached {len(self.train_x)}x{self.train_x.shape[1]} train"
            f" and {len(self.val_x)} val feature maps {tuple(self.train_x.shape[2:])} in "
            f"{self.cache_seconds:.0f} s"
        )

    def epoch(self, training: Any, seed: int) -> Any:
        g = torch.Generator().manual_seed(seed)
        batches = feature_batches(
            self.train_x, self.train_y, training.cfg.train.batch_size, self.steps, g
        )
        return train_one_epoch(training.step, batches, None, None)

    @torch.inference_mode()
    def val_map(self, model: MultilabelClassifier, batch: int = 128) -> float:
        model.eval()
        forward = CachedForward(model, self.stages)
        device = next(model.parameters()).device  # the cache stays in host memory
        outs = [
            model.probabilities(forward(self.val_x[i : i + batch, 0].to(device).float())).cpu()
            for i in range(0, len(self.val_x), batch)
        ]
        return evaluate_scores(torch.cat(outs).float().numpy(), self.val_y).mAP
