"""The pointing game on clip art: paste an object into one quadrant of a blank canvas and ask
whether its label's heatmap puts most of its mass there.

`make_scenes` writes a tiny training set of the same kind of pictures (each object at a random
place, so a model must find it anywhere); `quadrant_canvas` is one probe; `quadrant_mass` the
share of a [0, 1] map's mass inside a quadrant.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLIPART = Path(__file__).resolve().parents[1] / "data" / "clipart"
LABELS = ["australia", "ice_cream", "mantis"]
QUADRANTS = ["top-left", "top-right", "bottom-left", "bottom-right"]
CANVAS = 128
OBJECT = 56  # longer side of a pasted object: it fits in a quadrant with a margin


def clipart(label: str, side: int = OBJECT) -> Image.Image:
    im = Image.open(CLIPART / f"{label}.png").convert("RGB")
    scale = side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                     Image.Resampling.LANCZOS)  # fmt: skip


def paste(canvas: Image.Image, obj: Image.Image, centre: tuple[int, int]) -> None:
    # The clip art is black on white: darkest wins, so overlapping objects stay visible.
    x, y = centre[0] - obj.width // 2, centre[1] - obj.height // 2
    region = canvas.crop((x, y, x + obj.width, y + obj.height))
    merged = np.minimum(np.asarray(region), np.asarray(obj))
    canvas.paste(Image.fromarray(merged), (x, y))


def quadrant_canvas(label: str, quadrant: str, size: int = CANVAS) -> Image.Image:
    canvas = Image.new("RGB", (size, size), "white")
    row, col = divmod(QUADRANTS.index(quadrant), 2)
    paste(canvas, clipart(label), (size // 4 + col * size // 2, size // 4 + row * size // 2))
    return canvas


def quadrant_mass(heat: np.ndarray, quadrant: str) -> float:
    """Share of the map's total mass inside `quadrant` (maps with odd sides split the middle
    row and column evenly)."""
    h, w = heat.shape
    rows = np.clip(np.arange(h) + 0.5 - h / 2, -0.5, 0.5) + 0.5  # 0 top .. 1 bottom
    cols = np.clip(np.arange(w) + 0.5 - w / 2, -0.5, 0.5) + 0.5
    row, col = divmod(QUADRANTS.index(quadrant), 2)
    wr = rows if row else 1 - rows
    wc = cols if col else 1 - cols
    total = float(heat.sum())
    return float((heat * wr[:, None] * wc[None, :]).sum()) / total if total > 0 else 0.0


def make_scenes(root: Path, n: int, seed: int, name: str) -> Path:
    """n canvases with 0-2 different objects anywhere; a JSONL file of {image, labels}."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    objects = {label: clipart(label) for label in LABELS}
    lines = []
    for i in range(n):
        canvas = Image.new("RGB", (CANVAS, CANVAS), "white")
        labels = [str(x) for x in rng.choice(LABELS, size=int(rng.integers(0, 3)), replace=False)]
        for label in labels:
            obj = objects[label]
            cx = int(rng.integers(obj.width // 2, CANVAS - obj.width // 2 + 1))
            cy = int(rng.integers(obj.height // 2, CANVAS - obj.height // 2 + 1))
            paste(canvas, obj, (cx, cy))
        rel = f"images/{name}_{i:04d}.png"
        canvas.save(root / rel)
        lines.append(json.dumps({"image": rel, "labels": labels}))
    path = root / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
