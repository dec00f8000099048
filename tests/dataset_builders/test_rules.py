"""Unit tests: label normalisation, SVG metadata, safe imaging, the stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_training.dataset_builders import labels as rules
from model_training.dataset_builders.imaging import (
    TooLargeError,
    fit_within,
    load_rgba,
    on_background,
)
from model_training.dataset_builders.svgmeta import read_svg_metadata
from model_training.stratify import stratified_group_split


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Big_Cats", "big cats"),
        ("  North-America ", "north america"),
        ("ＤＯＧ", "dog"),  # NFKC folds full-width letters
        ('"quoted"', "quoted"),
    ],
)
def test_clean_token(raw: str, expected: str) -> None:
    assert rules.clean_token(raw) == expected


@pytest.mark.parametrize(
    "token", ["11", "2005", "hash(0x8a07724)", "0x98554a4", "a@b.org", "http://x", "www.x", "x"]
)
def test_junk_tokens(token: str) -> None:
    assert rules.is_junk(rules.clean_token(token))


def test_keyword_tokens_drop_meta_authors_and_map_synonyms() -> None:
    tokens = rules.keyword_tokens(
        [
            "Clip Art",
            "XMAS",
            "moon space",
            "Architetto Francesco Rollandin",
            "nicu",
            "navy",
            "public domain",
            "red,green;blue",
        ],
        author_names={"architetto francesco rollandin"},
        own_author_parts={"nicu", "buculei", "navy"},
        protected={"navy"},
    )
    assert tokens == ["christmas", "moon", "space", "navy", "red", "green", "blue"]


def test_folder_tokens_skip_collection_folders() -> None:
    assert rules.folder_tokens("computer/icons/lemon-theme/apps") == [
        "computer",
        "icons",
        "application",
    ]
    assert rules.folder_tokens("unsorted") == []


def test_singular_only_when_singular_is_known() -> None:
    mapping = rules.build_singular_map(
        [
            "stars",
            "star",
            "big cats",
            "cat",
            "berries",
            "berry",
            "boxes",
            "box",
            "news",
            "new",
            "glasses",
            "glass",
            "meats and eggs",
            "egg",
            "vehicles",
        ]
    )
    assert mapping == {
        "stars": "star",
        "big cats": "big cat",
        "berries": "berry",
        "boxes": "box",
    }
    assert rules.apply_singular(["stars", "star", "dog"], mapping) == ["star", "dog"]


def test_svg_metadata(tmp_path: Path) -> None:
    from tests.dataset_builders.conftest import SVG_TEMPLATE

    path = tmp_path / "a.svg"
    items = "<rdf:li>dog</rdf:li><rdf:li></rdf:li><rdf:li>Mammals</rdf:li>"
    path.write_text(SVG_TEMPLATE.format(title="A dog", items=items, author="Nicu Buculei"))
    meta = read_svg_metadata(path)
    assert meta.title == "A dog"
    assert meta.keywords == ("dog", "Mammals")
    assert meta.authors == ("Nicu Buculei", "Open Clip Art Library")
    assert not meta.errors


def test_svg_metadata_falls_back_on_broken_xml(tmp_path: Path) -> None:
    path = tmp_path / "broken.svg"
    path.write_text(
        "<svg><metadata><dc:subject><rdf:Bag><rdf:li>cat</rdf:li></rdf:Bag>"
        "</dc:subject></metadata><g></svg>"
    )
    meta = read_svg_metadata(path)
    assert meta.keywords == ("cat",)
    assert meta.errors


def test_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)
    with pytest.raises(TooLargeError):
        load_rgba(path, max_pixels=300 * 200 - 1)
    assert load_rgba(path, max_pixels=300 * 200).size == (300, 200)


def test_palette_transparency_composites_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    rgb = on_background(load_rgba(path))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 1)) == (255, 0, 0)


def test_fit_within_never_upscales() -> None:
    assert fit_within(Image.new("RGBA", (1000, 250)), 512).size == (512, 128)
    assert fit_within(Image.new("RGBA", (100, 50)), 512).size == (100, 50)


def _toy_labels(n: int = 600) -> list[list[str]]:
    rng = np.random.default_rng(3)
    vocab = [f"l{i}" for i in range(12)]
    probs = np.linspace(0.5, 0.02, len(vocab))
    return [[v for v, p in zip(vocab, probs, strict=True) if rng.random() < p] for _ in range(n)]


def test_split_is_seeded_grouped_and_stratified() -> None:
    label_sets = _toy_labels()
    groups = [i // 3 for i in range(len(label_sets))]  # groups of three
    a = stratified_group_split(label_sets, groups, (0.7, 0.1, 0.2), seed=5)
    assert a == stratified_group_split(label_sets, groups, (0.7, 0.1, 0.2), seed=5)
    assert a != stratified_group_split(label_sets, groups, (0.7, 0.1, 0.2), seed=6)
    for g in range(len(label_sets) // 3):
        assert len({a[3 * g], a[3 * g + 1], a[3 * g + 2]}) == 1
    sizes = Counter(a)
    assert abs(sizes[0] / len(a) - 0.7) < 0.05
    assert abs(sizes[2] / len(a) - 0.2) < 0.05
    # labels are spread in proportion far better than by a random split of the groups
    rng = np.random.default_rng(5)
    random_groups = rng.choice(3, size=len(label_sets) // 3, p=[0.7, 0.1, 0.2])
    random_split = [int(random_groups[i // 3]) for i in range(len(label_sets))]
    assert _deviation(label_sets, a) < 0.8 * _deviation(label_sets, random_split)
    for label in {lab for row in label_sets for lab in row}:
        total = sum(label in row for row in label_sets)
        in_test = sum(label in row for row, s in zip(label_sets, a, strict=True) if s == 2)
        assert abs(in_test - 0.2 * total) <= 3 + 0.05 * total


def _deviation(label_sets: list[list[str]], split: list[int]) -> float:
    """Sum over labels and splits of |count in split - fraction × total|."""
    total = 0.0
    for label in {lab for row in label_sets for lab in row}:
        n = sum(label in row for row in label_sets)
        for s, fraction in enumerate((0.7, 0.1, 0.2)):
            got = sum(label in row for row, x in zip(label_sets, split, strict=True) if x == s)
            total += abs(got - fraction * n)
    return total


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        stratified_group_split([["a"]], [0, 1], (0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="fractions"):
        stratified_group_split([["a"]], [0], (0.0, 0.0), seed=0)


def test_debian_version_from_unpacked_changelog(tmp_path: Path) -> None:
    import gzip

    from model_training.dataset_builders.openclipart import debian_version

    root = tmp_path / "usr" / "share" / "openclipart"
    doc = tmp_path / "usr" / "share" / "doc" / "openclipart-png"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as handle:
        handle.write("openclipart (1:0.18+dfsg-19) unstable; urgency=medium\n")
    assert debian_version(root, "png") == "openclipart-png 1:0.18+dfsg-19"
    assert debian_version(root, "svg") == "unknown"
