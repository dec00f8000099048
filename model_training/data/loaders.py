"""DataLoaders: training (augmented, shuffled each epoch by a seeded generator, sharded across
processes under DDP) and evaluation (the contract's preprocessing, in order)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from mltag_artifact import Preprocessing

from ..config import Config
from .dataset import MultilabelDataset
from .readers import LabelledSet
from .transforms import EvalTransform, TrainTransform

Loader = DataLoader[tuple[torch.Tensor, torch.Tensor]]


def train_loader(
    data: LabelledSet,
    prep: Preprocessing,
    cfg: Config,
    generator: torch.Generator,
    world: int = 1,
    rank: int = 0,
    pin: bool = False,
) -> tuple[Loader, DistributedSampler[Any] | None]:
    """The training loader and, with `world` > 1 processes, its sampler (`set_epoch` it)."""
    dataset = MultilabelDataset(data, TrainTransform(prep, cfg.data.augment))
    sampler: DistributedSampler[Any] | None = None
    if world > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed
        )
    batch_size = cfg.train.batch_size
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=len(dataset) > batch_size,
        generator=generator,
        pin_memory=pin,
        persistent_workers=False,
    )
    return loader, sampler


def eval_loader(
    data: LabelledSet, prep: Preprocessing, batch_size: int, workers: int, pin: bool = False
) -> Loader:
    return DataLoader(
        MultilabelDataset(data, EvalTransform(prep)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
    )
