"""Image -> tensor. Evaluation uses the artifact contract's preprocessing
(`mltag_artifact.preprocess`, driven by the artifact's `Preprocessing` description), the code
the service runs, so validation numbers are measured on exactly the pixels the deployed model
will see. Training decodes and resizes with the same code (`load_image`), then augments:
horizontal flip, RandAugment, Cutout (a random-colour box of `cutout_size`·H × `cutout_size`·W
with probability `cutout`).
Resize is a stretch to image_size × image_size: no crop, so no label is cut out of the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import load_image, preprocess

from ..config import AugmentConfig, DataConfig


def preprocessing_for(data: DataConfig) -> Preprocessing:
    """The artifact's preprocessing description for this data config (shared with export)."""
    return Preprocessing(
        height=data.image_size,
        width=data.image_size,
        resize="stretch",
        interpolation="bilinear",
        channel_order="RGB",
        layout="NCHW",
        input_dtype="float32",
        mean=data.mean,
        std=data.std,
        normalize_in_graph=False,
    )


class EvalTransform:
    """Image file -> (3, H, W) float tensor via the contract's `preprocess`."""

    def __init__(self, prep: Preprocessing) -> None:
        self.prep = prep

    def __call__(self, path: Path) -> torch.Tensor:
        sample = preprocess(path.read_bytes(), self.prep)
        return torch.from_numpy(sample)


class Cutout:
    """Fill one random box (size fraction of H and W) with a random colour, probability p.

    Works on a [0, 1] float tensor (3, H, W), before normalisation.
    """

    def __init__(self, p: float = 0.5, size: float = 0.4) -> None:
        self.p = p
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(()) >= self.p:
            return x
        _, h, w = x.shape
        bh, bw = max(1, round(h * self.size)), max(1, round(w * self.size))
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y0, y1 = max(0, cy - bh // 2), min(h, cy + bh - bh // 2)
        x0, x1 = max(0, cx - bw // 2), min(w, cx + bw - bw // 2)
        x = x.clone()
        x[:, y0:y1, x0:x1] = torch.rand(3, 1, 1)
        return x


class TrainTransform:
    """Image file -> augmented, normalised (3, H, W) tensor. Randomness from torch's RNG."""

    def __init__(self, prep: Preprocessing, augment: AugmentConfig) -> None:
        from torchvision import transforms as T  # noqa: N812 - torchvision's convention

        self.prep = prep
        ops: list[object] = []
        if augment.hflip > 0:
            ops.append(T.RandomHorizontalFlip(augment.hflip))
        if augment.randaugment and augment.randaugment_ops > 0:
            ops.append(
                T.RandAugment(
                    num_ops=augment.randaugment_ops, magnitude=augment.randaugment_magnitude
                )
            )
        self.pil_ops = T.Compose(ops)
        self.cutout = Cutout(augment.cutout, augment.cutout_size)
        self.mean = torch.tensor(prep.mean).view(3, 1, 1)
        self.std = torch.tensor(prep.std).view(3, 1, 1)

    def __call__(self, path: Path) -> torch.Tensor:
        im: Image.Image = self.pil_ops(load_image(path.read_bytes(), self.prep))
        arr = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
        x = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
        x = self.cutout(x)
        return (x - self.mean) / self.std
