"""Tiny generated multilabel data: coloured shapes on a noisy grey background.

Label k is present when a shape of colour k is drawn somewhere in the image, so the task is
learnable in a few CPU epochs by a tiny backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 60, 230),
    "yellow": (235, 220, 20),
}
SUPERCATEGORY = {"red": "warm", "green": "cool", "blue": "cool", "yellow": "warm"}


def make_images(
    root: Path, n: int, size: int = 48, seed: int = 0, p: float = 0.4
) -> list[tuple[str, list[str]]]:
    """Write n PNGs under root/images; return (relative path, labels) per image."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    out = []
    names = list(COLOURS)
    for i in range(n):
        base = rng.integers(90, 160)
        arr = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        labels = [c for c in names if rng.random() < p]
        for c in labels:
            s = int(rng.integers(size // 5, size // 3))
            x, y = (int(v) for v in rng.integers(0, size - s, 2))
            box = (x, y, x + s, y + s)
            if rng.random() < 0.5:
                draw.rectangle(box, fill=COLOURS[c])
            else:
                draw.ellipse(box, fill=COLOURS[c])
        rel = f"images/img_{seed}_{i:04d}.png"
        im.save(root / rel)
        out.append((rel, labels))
    return out


def write_coco(root: Path, items: list[tuple[str, list[str]]], name: str = "train.json") -> Path:
    names = list(COLOURS)
    doc: dict[str, list[dict[str, object]]] = {
        "images": [],
        "annotations": [],
        # ids deliberately not 0..C-1 and not in list order
        "categories": [
            {"id": 10 + 3 * k, "name": c, "supercategory": SUPERCATEGORY[c]}
            for k, c in reversed(list(enumerate(names)))
        ],
    }
    for i, (rel, labels) in enumerate(items):
        doc["images"].append({"id": 100 + i, "file_name": rel, "width": 48, "height": 48})
        for c in labels:
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": 100 + i,
                    "category_id": 10 + 3 * names.index(c),
                    "bbox": [0, 0, 1, 1],
                }
            )
    path = root / name
    path.write_text(json.dumps(doc))
    return path


def make_coco(root: Path, n: int, size: int = 48, seed: int = 0, name: str = "train.json") -> Path:
    return write_coco(root, make_images(root, n, size, seed), name)
