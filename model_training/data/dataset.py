"""torch Dataset over a `LabelledSet`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .readers import DataError, LabelledSet


class MultilabelDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, data: LabelledSet, transform: Callable[[Path], torch.Tensor]) -> None:
        self.data = data
        self.transform = transform
        self.targets = torch.from_numpy(data.targets.astype("float32"))  # (N, C)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.data.images[i]
        try:
            x = self.transform(path)
        except Exception as e:
            raise DataError(
                f"{self.data.sources[i]}: cannot load image {path}: {e} "
                "(data.verify_images=true with data.skip_bad=true skips unreadable images)"
            ) from e
        return x, self.targets[i]
