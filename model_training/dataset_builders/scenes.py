"""OpenClipart-Scenes: multi-object composites of OpenClipart-ML cut-outs, closer to COCO.

Each scene puts 2-5 alpha cut-outs (`objects/` of an OpenClipart-ML build) from distinct
source drawings on a canvas with a random background, at random scale and position, with
overlap limited so every object stays mostly visible. Scene labels are the union of the
objects' labels at a coarser level: their top-level category plus the most frequent finer
labels. An object is drawn only into scenes of its source image's OpenClipart-ML split, so
no drawing (nor near-duplicate group) is shared between the train, val and test scenes.

Every scene is generated from its own generator seeded with (seed, split, index): a build
is reproducible, and asking for more scenes keeps the first ones unchanged.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .card import label_statistics, render_card
from .imaging import save_rgb
from .jsonl import SPLITS, read_jsonl, write_jsonl, write_labels

Log = Callable[[str], None]
VISIBLE_ALPHA = 128  # pixels at least this opaque count as "the object" for occlusion


@dataclass(frozen=True)
class ScenesConfig:
    """Build options; every field is recorded in the dataset card."""

    scenes: tuple[int, int, int] = (8000, 1000, 2000)  # train, val, test
    canvas: int = 384
    min_objects: int = 2
    max_objects: int = 5
    scale: tuple[float, float] = (0.22, 0.5)  # object's longest side / canvas side
    min_visible: float = 0.6  # every object keeps at least this share of its pixels visible
    max_offcanvas: float = 0.15  # at most this share of an object's box may leave the canvas
    top_labels: int = 30  # finer labels kept besides the top-level categories
    seed: int = 0
    image_format: str = "jpg"
    quality: int = 90
    balance: float = 0.5  # object weight ∝ (size of its top-level category) ** -balance

    def __post_init__(self) -> None:
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError("need 2 <= min_objects <= max_objects")
        if self.canvas < 32:
            raise ValueError("canvas must be at least 32 px")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"bad scale range {self.scale}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be png or jpg, not {self.image_format!r}")
        if any(n < 0 for n in self.scenes):
            raise ValueError("scene counts must be non-negative")


@dataclass(frozen=True)
class SceneObject:
    path: Path
    image: str  # the source image (relative to the OpenClipart-ML folder)
    group: str
    labels: tuple[str, ...]  # coarse labels
    top: str  # primary top-level category, for balancing


def coarse_vocabulary(objects: Sequence[dict[str, Any]], top_labels: int) -> list[str]:
    """Top-level categories plus the `top_labels` most frequent other labels (train split)."""
    tops = {label for obj in objects for label in obj.get("top", [])}
    counts = Counter(
        label
        for obj in objects
        if obj["split"] == "train"
        for label in obj["labels"]
        if label not in tops
    )
    frequent = [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return sorted(tops | set(frequent[:top_labels]))


def load_objects(source: Path, vocabulary: set[str]) -> dict[str, list[SceneObject]]:
    pools: dict[str, list[SceneObject]] = {name: [] for name in SPLITS}
    for obj in read_jsonl(source / "objects.jsonl"):
        labels = tuple(sorted(set(obj["labels"]) & vocabulary))
        if not labels or obj["split"] not in pools:
            continue
        top = obj.get("top") or ["(none)"]
        pools[obj["split"]].append(
            SceneObject(
                path=source / obj["object"],
                image=obj["image"],
                group=obj.get("group", obj["image"]),
                labels=labels,
                top=top[0],
            )
        )
    return pools


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, str]:
    kind = str(rng.choice(["white", "solid", "gradient", "gradient"]))
    if kind == "white":
        return Image.new("RGB", (size, size), (255, 255, 255)), kind
    c1 = rng.integers(0, 256, size=3)
    if kind == "solid":
        return Image.new("RGB", (size, size), tuple(int(c) for c in c1)), kind
    c2 = rng.integers(0, 256, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(-1, 1, size)
    xx, yy = np.meshgrid(coords, coords)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / np.sqrt(2) * 0.5 + 0.5  # (H, W) in [0,1]
    pixels = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), kind


def _paste(canvas: Image.Image, obj: Image.Image, x: int, y: int) -> None:
    """Alpha-composite `obj` with its top-left corner at (x, y), clipping at the edges."""
    left, top = max(0, -x), max(0, -y)
    right = min(obj.width, canvas.width - x)
    bottom = min(obj.height, canvas.height - y)
    if right <= left or bottom <= top:
        return
    canvas.alpha_composite(obj.crop((left, top, right, bottom)), dest=(x + left, y + top))


def _stamp(owner: np.ndarray, mask: np.ndarray, x: int, y: int, index: int) -> None:
    size = owner.shape[0]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(size, x + mask.shape[1]), min(size, y + mask.shape[0])
    if x1 > x0 and y1 > y0:
        region = owner[y0:y1, x0:x1]
        region[mask[y0 - y : y1 - y, x0 - x : x1 - x]] = index


def compose_scene(
    candidates: Sequence[SceneObject],
    config: ScenesConfig,
    rng: np.random.Generator,
    count: int | None = None,
) -> tuple[Image.Image, list[dict[str, Any]], str]:
    """Place up to `count` of `candidates` in order (later ones on top).

    Returns the RGB scene, the placements and the background kind. A candidate that cannot
    be placed with every object at least `min_visible` visible, after a bounded number of
    tries at decreasing scale, or that has no pixel opaque enough to count, is passed over
    for the next one.
    """
    count = len(candidates) if count is None else count
    size = config.canvas
    background, kind = _background(rng, size)
    canvas = background.convert("RGBA")
    owner = np.full((size, size), -1, dtype=np.int32)  # (H, W) index of the top object
    areas: list[int] = []
    placed: list[dict[str, Any]] = []
    for obj in candidates:
        if len(placed) >= count:
            break
        with Image.open(obj.path) as handle:
            source = handle.convert("RGBA")
        spot = _find_spot(source, owner, areas, config, rng)
        if spot is None:
            continue
        owner, resized, x, y, area = spot
        areas.append(area)
        _paste(canvas, resized, x, y)
        placed.append(
            {
                "image": obj.image,
                "labels": list(obj.labels),
                "box": [x, y, resized.width, resized.height],
            }
        )
    if placed:
        visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(placed))
        for item, area, seen in zip(placed, areas, visible, strict=True):
            item["visible"] = round(float(seen) / area, 3)
    return canvas.convert("RGB"), placed, kind


def _find_spot(
    source: Image.Image,
    owner: np.ndarray,
    areas: list[int],
    config: ScenesConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Image.Image, int, int, int] | None:
    """A random scale and position for `source` that leaves it and every object already
    placed (`areas`, `owner`) at least `min_visible` visible: the owner map with it stamped,
    the resized image, its top-left corner and its opaque area. None when it does not fit."""
    size = config.canvas
    scale = rng.uniform(*config.scale)
    resized = Image.new("RGBA", (0, 0))
    mask = np.zeros((0, 0), dtype=bool)
    for attempt in range(24):
        side = max(8, round(size * scale))
        ratio = side / max(source.size)
        w, h = max(1, round(source.width * ratio)), max(1, round(source.height * ratio))
        margin_x, margin_y = round(w * config.max_offcanvas), round(h * config.max_offcanvas)
        x = int(rng.integers(-margin_x, max(-margin_x + 1, size - w + margin_x + 1)))
        y = int(rng.integers(-margin_y, max(-margin_y + 1, size - h + margin_y + 1)))
        if resized.size != (w, h):
            resized = source.resize((w, h), Image.Resampling.LANCZOS)
            mask = np.asarray(resized.getchannel("A")) >= VISIBLE_ALPHA  # (h, w)
        area = int(mask.sum())
        if area == 0:
            return None
        trial = owner.copy()
        _stamp(trial, mask, x, y, len(areas))
        visible = np.bincount(trial[trial >= 0].ravel(), minlength=len(areas) + 1)
        shares = visible / np.asarray([*areas, area], dtype=np.float64)
        if shares.min() >= config.min_visible:
            return trial, resized, x, y, area
        if attempt % 6 == 5:
            scale *= 0.85
    return None


def _candidates(
    pool: Sequence[SceneObject], weights: np.ndarray, count: int, rng: np.random.Generator
) -> list[SceneObject]:
    """Up to 3 × `count` weighted picks with distinct source images and near-duplicate groups
    (the spares replace objects that do not fit)."""
    chosen: list[SceneObject] = []
    groups: set[str] = set()
    order = rng.choice(len(pool), size=min(len(pool), count * 8), replace=False, p=weights)
    for index in order:
        obj = pool[int(index)]
        if obj.group in groups:
            continue
        chosen.append(obj)
        groups.add(obj.group)
        if len(chosen) == 3 * count:
            break
    return chosen


def _weights(pool: Sequence[SceneObject], balance: float) -> np.ndarray:
    sizes = Counter(obj.top for obj in pool)
    w = np.asarray([sizes[obj.top] ** -balance for obj in pool], dtype=np.float64)
    return w / w.sum()


@dataclass
class _Tally:
    objects_per_scene: Counter[int] = field(default_factory=Counter)
    backgrounds: Counter[str] = field(default_factory=Counter)


def build_scenes(
    source: Path,
    output: Path,
    config: ScenesConfig | None = None,
    *,
    command: str = "",
    log: Log = print,
) -> dict[str, Any]:
    """Build OpenClipart-Scenes from an OpenClipart-ML folder; return its statistics."""
    config = config or ScenesConfig()
    started = time.monotonic()
    source, output = Path(source), Path(output)
    if not (source / "objects.jsonl").is_file():
        raise FileNotFoundError(
            f"{source / 'objects.jsonl'} not found: build OpenClipart-ML with objects first"
        )
    all_objects = read_jsonl(source / "objects.jsonl")
    vocabulary = coarse_vocabulary(all_objects, config.top_labels)
    pools = load_objects(source, set(vocabulary))
    output.mkdir(parents=True, exist_ok=True)
    split_rows: dict[str, list[list[str]]] = {}
    tally = _Tally()
    for split_index, (name, count) in enumerate(zip(SPLITS, config.scenes, strict=True)):
        split_rows[name] = _build_split(
            output, name, split_index, count, pools[name], config, tally, log
        )
    used = sorted({label for rows in split_rows.values() for row in rows for label in row})
    write_labels(output / "labels.txt", used)
    seconds = time.monotonic() - started
    stats = label_statistics(split_rows, used)
    placed_counts, backgrounds = tally.objects_per_scene, tally.backgrounds
    build = {
        "config": asdict(config),
        "objects_per_split": {name: len(pools[name]) for name in SPLITS},
        "objects_per_scene": {str(k): placed_counts[k] for k in sorted(placed_counts)},
        "backgrounds": dict(sorted(backgrounds.items())),
        "coarse_vocabulary": vocabulary,
        "source": str(source),
        "seconds": round(seconds, 1),
    }
    (output / "stats.json").write_text(
        json.dumps({"stats": stats, "build": build}, indent=2) + "\n", encoding="utf-8"
    )
    card = render_card(
        title="OpenClipart-Scenes",
        summary=_SUMMARY,
        stats=stats,
        rules=_rules(config, vocabulary),
        build=build,
        command=command
        or "python -m model_training.dataset_builders scenes --source DIR --output DIR",
        extra_sections=[("Per-object metadata", _META)],
    )
    (output / "DATASET_CARD.md").write_text(card, encoding="utf-8")
    log(f"wrote {sum(config.scenes)} scenes, {len(used)} labels to {output} in {seconds:.0f} s")
    return {"stats": stats, "build": build}


def _build_split(
    output: Path,
    name: str,
    split_index: int,
    count: int,
    pool: Sequence[SceneObject],
    config: ScenesConfig,
    tally: _Tally,
    log: Log,
) -> list[list[str]]:
    """Write `count` scenes of split `name` (images, `<name>.jsonl`, `meta/<name>.jsonl`);
    returns their label lists."""
    if count and len({obj.group for obj in pool}) < config.min_objects:
        raise ValueError(f"split {name} has too few usable objects ({len(pool)})")
    weights = _weights(pool, config.balance) if pool else np.zeros(0)
    rows: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    scene_labels: list[list[str]] = []
    for index in range(count):
        rng = np.random.default_rng([config.seed, split_index, index])
        k = int(rng.integers(config.min_objects, config.max_objects + 1))
        picked = _candidates(pool, weights, k, rng)
        image, placed, kind = compose_scene(picked, config, rng, k)
        relative = f"images/{name}/{name}_{index:06d}.{config.image_format}"
        save_rgb(image, output / relative, config.image_format, config.quality)
        labels = sorted({label for item in placed for label in item["labels"]})
        rows.append({"image": relative, "labels": labels})
        scene_labels.append(labels)
        meta.append({"image": relative, "background": kind, "objects": placed})
        tally.objects_per_scene[len(placed)] += 1
        tally.backgrounds[kind] += 1
        if (index + 1) % 1000 == 0:
            log(f"  {name}: {index + 1}/{count}")
    write_jsonl(output / f"{name}.jsonl", rows)
    write_jsonl(output / "meta" / f"{name}.jsonl", meta)
    log(f"{name}: {count} scenes from {len(pool)} objects")
    return scene_labels


_SUMMARY = """\
Synthetic multi-object scenes composited from the alpha cut-outs of an OpenClipart-ML build
(public-domain clip art): a step from single-drawing images towards COCO-like pictures where
several objects share one image and labels are the union of what is in it.
"""

_META = """\
`meta/<split>.jsonl` records, per scene, the background kind and every placed object: its
source image in OpenClipart-ML, its labels, its box `[x, y, w, h]` on the canvas (may extend
past the edge) and the share of its pixels left visible.
"""


def _rules(config: ScenesConfig, vocabulary: Sequence[str]) -> list[str]:
    lo, hi = config.scale
    return [
        "Objects are the alpha cut-outs of OpenClipart-ML; an object is used only in scenes of "
        "its source image's OpenClipart-ML split, so train/val/test scenes share no drawing "
        "and no near-duplicate group (and no drawing crosses splits between the two sets).",
        f"Per scene: {config.min_objects}-{config.max_objects} objects (uniform), from distinct "
        "source drawings and distinct near-duplicate groups, drawn with weight ∝ (size of the "
        f"object's top-level category)^-{config.balance:g}, so large categories (computer "
        "icons) do not fill every scene.",
        f"Canvas {config.canvas}×{config.canvas} px; background white, a random solid colour or "
        "a random two-colour linear gradient at a random angle (probabilities 1/4, 1/4, 1/2).",
        f"Object size: longest side uniform in [{lo:g}, {hi:g}] × canvas; position uniform with "
        f"at most {config.max_offcanvas:g} of the box off-canvas; later objects on top.",
        f"Overlap: a placement is kept only if every object (earlier ones included) keeps at "
        f"least {config.min_visible:g} of its opaque pixels visible; otherwise up to 24 tries "
        "with the scale shrinking by 0.85 every 6; an object that still does not fit, or has "
        f"no pixel with alpha ≥ {VISIBLE_ALPHA}, is replaced by the next weighted pick (see the "
        "objects-per-scene count in the build record).",
        f"Labels: union of the placed objects' labels restricted to the coarse vocabulary = "
        f"top-level categories + the {config.top_labels} most frequent other labels on the "
        "train objects; objects without any coarse label are not used. Coarse vocabulary: "
        + ", ".join(vocabulary)
        + ".",
        f"Scene i of split s is drawn with numpy's generator seeded by ({config.seed}, s, i); "
        f"images saved as {config.image_format.upper()}"
        + (f" (quality {config.quality})." if config.image_format == "jpg" else "."),
    ]
