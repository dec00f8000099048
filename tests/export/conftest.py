"""Tiny real training runs (1 epoch, generated images, timm's `test_efficientnet`) to export.

Runs are trained once per session and shared; tests that change a run copy it first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from model_training import plots
from model_training.config import load_config
from model_training.trainer import fit
from tests.training.synth import make_coco

TINY = "test_efficientnet"
SIZE = 32

RunFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train annotations, test annotations): coloured shapes, 4 labels."""
    root = tmp_path_factory.mktemp("export-data")
    train = make_coco(root, 48, size=SIZE, seed=2)
    test = make_coco(root, 32, size=SIZE, seed=3, name="test.json")
    return train, test


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: one thread is faster than two contending ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_run(tmp_path_factory: pytest.TempPathFactory, coco: tuple[Path, Path]) -> RunFactory:
    """`make_run(head, loss, *overrides)` -> a finished run directory (cached per arguments).

    Real `fit` runs; only its PNG plots are skipped (matplotlib costs seconds per run and the
    exporter never reads them).
    """
    cache: dict[tuple[str, ...], Path] = {}
    train, test = coco

    def factory(head: str, loss: str, *overrides: str, epochs: int = 1) -> Path:
        key = (head, loss, str(epochs), *overrides)
        if key not in cache:
            cfg = load_config(
                None,
                [
                    f"data.train={train}",
                    f"data.test={test}",
                    f"data.image_size={SIZE}",
                    "data.num_workers=0",
                    "data.val_fraction=0.25",
                    "data.augment.randaugment=false",
                    "data.augment.cutout=0",
                    f"model.backbone={TINY}",
                    f"model.head={head}",
                    f"loss.name={loss}",
                    "head.ml_decoder.embed_dim=32",
                    "head.ml_decoder.ff_dim=64",
                    "head.ml_decoder.num_heads=4",
                    "optim.name=adamw",
                    "optim.sam=false",
                    "train.lr=0.01",
                    f"train.epochs={epochs}",
                    "train.batch_size=16",
                    "train.device=cpu",
                    "train.progress=false",
                    "export.name=tiny-test",
                    *overrides,
                ],
            )
            run = tmp_path_factory.mktemp(f"run-{head}-{loss}")
            shutil.rmtree(run)
            torch.manual_seed(0)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(plots, "plot_pr_curves", lambda *a, **k: None)
                mp.setattr(plots, "plot_curves", lambda *a, **k: None)
                fit(cfg, run)
            cache[key] = run
        return cache[key]

    return factory


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest
