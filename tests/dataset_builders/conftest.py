"""A tiny fake OpenClipart tree (png/ + svg/ with RDF metadata, symlinks) built per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

SVG_TEMPLATE = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg"
     xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/"
     xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" width="32" height="32">
  <metadata>
    <rdf:RDF>
      <cc:Work rdf:about="">
        <dc:title>{title}</dc:title>
        <dc:subject>
          <rdf:Bag>
{items}
          </rdf:Bag>
        </dc:subject>
        <dc:creator><cc:Agent><dc:title>{author}</dc:title></cc:Agent></dc:creator>
        <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent>
        </dc:publisher>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <rect x="4" y="4" width="24" height="24" fill="red"/>
</svg>
"""

# (category, file stem, keywords, author, colour)
DRAWINGS: list[tuple[str, str, list[str], str, tuple[int, int, int]]] = []
for i in range(6):
    DRAWINGS.append(
        (
            "animals/mammals/dogs",
            f"dog_{i}_john_smith_01",
            [
                "Dogs",
                "puppy",
                "Mammal",
                "clip art",
                "2005",
                "John Smith",
                "hash(0x8a07724)",
                "smith",
            ],
            "John Smith",
            (150, 90, 30),
        )
    )
for i in range(6):
    DRAWINGS.append(
        (
            "animals/mammals/housecats",
            f"cat_{i}_jane_doe_01",
            ["cats", "Feline", "animal", "public domain", "svg", "Jane", "jane@example.org"],
            "Jane Doe",
            (80, 80, 80),
        )
    )
for i in range(5):
    DRAWINGS.append(
        (
            "food/fruit",
            f"apple_{i}",
            ["apples", "Apple", "Fruits", "red, sweet", "remix"] + (["zebra"] if i == 0 else []),
            "Open Clip Art Library",
            (200, 20, 20),
        )
    )
for i in range(5):
    DRAWINGS.append(
        (
            "transportation/vehicles",
            f"car_{i}",
            ["automobile", "Car", "www.example.com", "PNG", "1999", "Jane Doe"],
            "Ann Driver",
            (20, 20, 200),
        )
    )
# near-duplicate variants: same stem, variant number -> one group
for i in (1, 2, 3):
    DRAWINGS.append(
        (
            "food/fruit",
            f"banana_bunch_0{i}",
            ["bananas", "fruit"],
            "Bob Yellow",
            (230, 220, 40),
        )
    )
DRAWINGS.append(("unsorted", "mystery_thing", ["", "11"], "Nobody", (10, 200, 10)))
# fully transparent image
DRAWINGS.append(("food/fruit", "invisible_pear", ["pear", "fruit"], "Ghost Writer", (0, 0, 0)))
# an image larger than the test's pixel limit
DRAWINGS.append(("food/fruit", "huge_melon", ["melon", "fruit"], "Big Artist", (0, 160, 0)))

HUGE_SIDE = 80  # tests set max_pixels below HUGE_SIDE**2


def _write_png(path: Path, stem: str, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if stem == "invisible_pear":
        Image.new("RGBA", (24, 24), (0, 0, 0, 0)).save(path)
        return
    side = HUGE_SIDE if stem == "huge_melon" else 24 + (len(stem) % 3) * 8
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    inner = Image.new("RGBA", (side // 2, side // 2), (*color, 255))
    image.paste(inner, (side // 4, side // 4))
    if stem.startswith("car_"):
        image.convert("RGB").convert("P").save(path)  # palette, no alpha
    else:
        image.save(path)


def _write_svg(path: Path, title: str, keywords: list[str], author: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    items = "\n".join(f"            <rdf:li>{k}</rdf:li>" for k in keywords)
    path.write_text(SVG_TEMPLATE.format(title=title, items=items, author=author), "utf-8")


def make_tree(root: Path) -> Path:
    """Write the fake tree under `root` (`png/` and `svg/`) and return `root`."""
    for category, stem, keywords, author, color in DRAWINGS:
        _write_png(root / "png" / category / f"{stem}.png", stem, color)
        _write_svg(root / "svg" / category / f"{stem}.svg", stem, keywords, author)
    # the first dog is also filed under recreation/pets (a symlink, as Debian ships it)
    for kind in ("png", "svg"):
        link = root / kind / "recreation" / "pets" / f"dog_0_john_smith_01.{kind}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../animals/mammals/dogs/dog_0_john_smith_01.{kind}", link)
    return root


@pytest.fixture(scope="session")
def clipart_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("openclipart"))


@pytest.fixture(scope="session")
def ml_build(clipart_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenClipart-ML built from the fake tree with small limits."""
    from model_training.dataset_builders.openclipart import OpenClipartConfig, build_openclipart

    out = tmp_path_factory.mktemp("ml")
    config = OpenClipartConfig(
        min_count=3,
        max_pixels=HUGE_SIDE**2 - 1,
        max_side=32,
        object_side=32,
        seed=1,
        fractions=(0.5, 0.25, 0.25),
    )
    build_openclipart(clipart_tree, out, config, log=lambda _: None)
    return out
