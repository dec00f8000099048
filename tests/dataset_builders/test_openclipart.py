"""OpenClipart-ML builder on the fake tree: labels, skips, splits, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from model_training.dataset_builders.folder_hierarchy import folder_hierarchy
from model_training.dataset_builders.jsonl import SPLITS, read_jsonl, read_labels
from model_training.dataset_builders.openclipart import (
    OpenClipartConfig,
    build_openclipart,
    scan_tree,
)


def _by_stem(build: Path) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for split in SPLITS:
        for row in read_jsonl(build / f"{split}.jsonl"):
            out[Path(row["image"]).stem] = (split, row["labels"])
    return out


def test_scan_merges_symlinked_paths(clipart_tree: Path) -> None:
    sources = {s.key: s for s in scan_tree(clipart_tree)}
    dog = sources["animals/mammals/dogs/dog_0_john_smith_01.png"]
    assert dog.categories == ["animals/mammals/dogs", "recreation/pets"]
    assert dog.svgs == ["animals/mammals/dogs/dog_0_john_smith_01.svg"]
    assert dog.paths == 2
    assert not any(key.startswith("recreation/") for key in sources)


def test_expected_labels(ml_build: Path) -> None:
    rows = _by_stem(ml_build)
    # folders + keywords; case, plural, synonyms (puppy, housecats, Feline, automobile) merged;
    # "clip art", "svg", "PNG", "remix", "public domain", years, hashes, e-mail, URL dropped;
    # the author's full name ("John Smith") and own name parts ("smith", "Jane") dropped.
    assert rows["dog_3_john_smith_01"][1] == ["animal", "dog", "mammal"]
    assert rows["cat_2_jane_doe_01"][1] == ["animal", "cat", "mammal"]
    assert rows["apple_1"][1] == ["apple", "food", "fruit", "red", "sweet"]
    # "vehicles" stays plural: no "vehicle" label exists to merge it into;
    # "Jane Doe" is another drawing's author, dropped as a whole keyword.
    assert rows["car_4"][1] == ["car", "transportation", "vehicles"]
    assert rows["banana_bunch_02"][1] == ["bananas", "food", "fruit"]


def test_symlinked_categories_add_labels_but_rare_ones_are_cut(ml_build: Path) -> None:
    rows = _by_stem(ml_build)
    # dog_0 is also under recreation/pets, but those labels occur once (< min_count 3)
    assert rows["dog_0_john_smith_01"][1] == ["animal", "dog", "mammal"]
    labels = read_labels(ml_build / "labels.txt")
    assert "zebra" not in labels  # on one image only
    assert "recreation" not in labels
    assert labels == sorted(labels)
    for forbidden in (
        "clip art",
        "svg",
        "png",
        "remix",
        "public domain",
        "2005",
        "smith",
        "john smith",
        "jane",
        "jane doe",
        "year",
        "11",
    ):
        assert forbidden not in labels


def test_skips_are_counted_and_unlabelled_images_dropped(ml_build: Path) -> None:
    stats = json.loads((ml_build / "stats.json").read_text())
    counts = stats["build"]["counts"]
    assert counts["skipped_too_large"] == 1
    assert counts["skipped_empty"] == 1
    assert counts["dropped_no_label"] == 1  # "unsorted/mystery_thing": only junk keywords
    assert counts["png_paths"] == 29 and counts["unique_png_files"] == 28
    rows = _by_stem(ml_build)
    assert "huge_melon" not in rows and "invisible_pear" not in rows
    assert "mystery_thing" not in rows
    assert stats["stats"]["images"] == len(rows) == 25


def test_images_are_rgb_on_white_and_small(ml_build: Path) -> None:
    for split in SPLITS:
        for row in read_jsonl(ml_build / f"{split}.jsonl"):
            with Image.open(ml_build / row["image"]) as image:
                assert image.mode == "RGB"
                assert max(image.size) <= 32
                if "car_" not in row["image"]:  # the cars are opaque palette images
                    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    objects = read_jsonl(ml_build / "objects.jsonl")
    assert len(objects) == 25
    with Image.open(ml_build / objects[0]["object"]) as cutout:
        assert cutout.mode == "RGBA"
        assert cutout.getpixel((0, 0))[3] == 255  # trimmed to the visible square


def test_near_duplicates_share_a_split(ml_build: Path) -> None:
    rows = _by_stem(ml_build)
    assert len({rows[f"banana_bunch_0{i}"][0] for i in (1, 2, 3)}) == 1


def test_split_is_deterministic(clipart_tree: Path, tmp_path: Path, ml_build: Path) -> None:
    config = OpenClipartConfig(
        min_count=3,
        max_pixels=80 * 80 - 1,
        max_side=32,
        object_side=32,
        seed=1,
        fractions=(0.5, 0.25, 0.25),
    )
    build_openclipart(clipart_tree, tmp_path, config, log=lambda _: None)
    for name in (*[f"{s}.jsonl" for s in SPLITS], "labels.txt", "objects.jsonl"):
        assert (tmp_path / name).read_text() == (ml_build / name).read_text()


def test_card_has_statistics_and_rules(ml_build: Path) -> None:
    card = (ml_build / "DATASET_CARD.md").read_text()
    assert "# OpenClipart-ML" in card
    assert "| images | 25 |" in card
    assert "labels per image: mean" in card
    assert "Meta-keywords dropped" in card
    assert "puppy→dog" in card


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="image_format"):
        OpenClipartConfig(image_format="gif")
    with pytest.raises(ValueError, match="fractions"):
        OpenClipartConfig(fractions=(0.5, -0.1, 0.6))


def test_category_folders_become_the_label_hierarchy(ml_build: Path) -> None:
    """animals/mammals/dogs: dog -> mammal -> animal; keyword-only labels have no entry;
    a parent dropped by the frequency cut (recreation) is not used."""
    labels = json.loads((ml_build / "hierarchy.json").read_text())["labels"]
    assert labels["dog"] == {"parents": ["mammal"], "category": "animal"}
    assert labels["cat"] == {"parents": ["mammal"], "category": "animal"}
    assert labels["mammal"] == {"parents": ["animal"], "category": "animal"}
    assert labels["animal"] == {"parents": [], "category": "animal"}
    assert labels["fruit"] == {"parents": ["food"], "category": "food"}
    assert "red" not in labels and "recreation" not in labels


def test_hierarchy_edges_need_a_share_and_never_cycle() -> None:
    paths = [["animal", "cat"]] * 9 + [["sign", "cat"], ["cat", "animal"]]
    labels = folder_hierarchy(paths, min_share=0.2)["labels"]
    assert labels["cat"]["parents"] == ["animal"]  # one filing under sign is below 20 %
    assert labels["animal"]["parents"] == []  # animal -> cat would close a cycle
