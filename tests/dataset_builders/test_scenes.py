"""OpenClipart-Scenes from the fake OpenClipart-ML build: leakage, determinism, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_training.dataset_builders.jsonl import SPLITS, read_jsonl, read_labels
from model_training.dataset_builders.scenes import (
    ScenesConfig,
    build_scenes,
    coarse_vocabulary,
    compose_scene,
    load_objects,
)

CONFIG = ScenesConfig(scenes=(12, 4, 4), canvas=64, max_objects=4, top_labels=2, seed=3)


@pytest.fixture(scope="module")
def scenes_build(ml_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(ml_build, out, CONFIG, log=lambda _: None)
    return out


def test_files_and_sizes(scenes_build: Path) -> None:
    for split, count in zip(SPLITS, CONFIG.scenes, strict=True):
        rows = read_jsonl(scenes_build / f"{split}.jsonl")
        assert len(rows) == count
        for row in rows:
            with Image.open(scenes_build / row["image"]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
    assert (scenes_build / "DATASET_CARD.md").read_text().startswith("# OpenClipart-Scenes")
    assert (scenes_build / "labels.txt").is_file()


def test_no_source_image_crosses_splits(ml_build: Path, scenes_build: Path) -> None:
    source_split = {o["image"]: o["split"] for o in read_jsonl(ml_build / "objects.jsonl")}
    group_split = {o["group"]: o["split"] for o in read_jsonl(ml_build / "objects.jsonl")}
    group_of = {o["image"]: o["group"] for o in read_jsonl(ml_build / "objects.jsonl")}
    used: dict[str, set[str]] = {}
    for split in SPLITS:
        for scene in read_jsonl(scenes_build / "meta" / f"{split}.jsonl"):
            images = [obj["image"] for obj in scene["objects"]]
            assert len(images) == len(set(images))  # distinct sources within a scene
            for image in images:
                assert source_split[image] == split
                assert group_split[group_of[image]] == split
                used.setdefault(image, set()).add(split)
    assert all(len(splits) == 1 for splits in used.values())


def test_labels_are_union_of_coarse_object_labels(ml_build: Path, scenes_build: Path) -> None:
    vocabulary = set(coarse_vocabulary(read_jsonl(ml_build / "objects.jsonl"), 2))
    assert {"animal", "food", "transportation"} <= vocabulary  # top-level categories
    assert set(read_labels(scenes_build / "labels.txt")) <= vocabulary
    for split in SPLITS:
        rows = read_jsonl(scenes_build / f"{split}.jsonl")
        metas = read_jsonl(scenes_build / "meta" / f"{split}.jsonl")
        for row, meta in zip(rows, metas, strict=True):
            union = sorted({lab for obj in meta["objects"] for lab in obj["labels"]})
            assert row["labels"] == union
            assert set(union) <= vocabulary
            assert CONFIG.min_objects <= len(meta["objects"]) <= CONFIG.max_objects
            for obj in meta["objects"]:
                assert obj["visible"] >= CONFIG.min_visible - 1e-6


def test_build_is_reproducible(ml_build: Path, scenes_build: Path, tmp_path: Path) -> None:
    build_scenes(ml_build, tmp_path, CONFIG, log=lambda _: None)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text() == (
            scenes_build / f"{split}.jsonl"
        ).read_text()
        first = read_jsonl(tmp_path / f"{split}.jsonl")[0]["image"]
        a = np.asarray(Image.open(tmp_path / first))
        b = np.asarray(Image.open(scenes_build / first))
        assert np.array_equal(a, b)


def test_more_scenes_keep_the_first_ones(ml_build: Path, scenes_build: Path, tmp_path: Path):
    bigger = ScenesConfig(scenes=(14, 4, 4), canvas=64, max_objects=4, top_labels=2, seed=3)
    build_scenes(ml_build, tmp_path, bigger, log=lambda _: None)
    assert read_jsonl(tmp_path / "train.jsonl")[:12] == read_jsonl(scenes_build / "train.jsonl")


def test_compose_respects_visibility(ml_build: Path) -> None:
    vocabulary = set(coarse_vocabulary(read_jsonl(ml_build / "objects.jsonl"), 5))
    pool = load_objects(ml_build, vocabulary)["train"]
    config = ScenesConfig(canvas=48, scale=(0.6, 0.9), min_visible=0.7)
    rng = np.random.default_rng(0)
    image, placed, _ = compose_scene(pool[:4], config, rng)
    assert image.size == (48, 48)
    assert 1 <= len(placed) <= 4
    assert all(item["visible"] >= 0.7 for item in placed)


def test_missing_objects_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"objects\.jsonl"):
        build_scenes(tmp_path, tmp_path / "out", CONFIG, log=lambda _: None)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="objects"):
        ScenesConfig(min_objects=1)
    with pytest.raises(ValueError, match="scale"):
        ScenesConfig(scale=(0.5, 0.2))
