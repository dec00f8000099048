"""OpenClipart-ML: a multilabel data set from Debian's openclipart-png + openclipart-svg.

The two packages mirror one folder tree (`png/<category>/<name>.png` next to
`svg/<category>/<name>.svg`). A drawing filed under several categories appears once per
category, as a symlink to one real PNG; this builder makes one image per real PNG and gives
it the union of the labels of every path that points to it (its folders and the
`dc:subject` keywords of each corresponding SVG). See `labels.py` for the normalisation
rules and `model_training/stratify.py` for the split.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.hierarchy import HIERARCHY_FILE
from ..stratify import stratified_group_split
from . import labels as rules
from .card import label_statistics, render_card
from .folder_hierarchy import folder_hierarchy, folder_paths, write_hierarchy
from .imaging import (
    DEFAULT_MAX_PIXELS,
    TooLargeError,
    TransparentImageError,
    fit_within,
    load_rgba,
    on_background,
    save_rgb,
    trim_alpha,
)
from .jsonl import SPLITS, write_jsonl, write_labels
from .svgmeta import SvgMetadata, read_svg_metadata

Log = Callable[[str], None]
_VARIANT_SUFFIX = re.compile(r"(?:[_-]*\d+)?[_-]*$")


@dataclass(frozen=True)
class OpenClipartConfig:
    """Build options; every field is recorded in the dataset card."""

    min_count: int = 15
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    max_side: int = 512
    object_side: int = 256
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_per_folder: int = 300
    image_format: str = "png"
    write_objects: bool = True
    limit: int = 0  # debugging: keep only the first N drawings (0: all)

    def __post_init__(self) -> None:
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be png or jpg, not {self.image_format!r}")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or sum(self.fractions) <= 0:
            raise ValueError(f"fractions must be three non-negative numbers: {self.fractions}")
        if self.min_count < 1 or self.max_side < 16 or self.object_side < 16:
            raise ValueError("min_count >= 1, max_side >= 16 and object_side >= 16 required")


@dataclass
class Source:
    """One real PNG file and every tree path (category) that refers to it."""

    key: str  # path of the real PNG relative to png/, e.g. "animals/mammals/dogs/x.png"
    categories: list[str] = field(default_factory=list)
    svgs: list[str] = field(default_factory=list)  # real SVG paths relative to svg/
    paths: int = 0  # tree paths (files and symlinks) that resolve to this PNG

    @property
    def folder(self) -> str:
        return self.key.rpartition("/")[0]

    @property
    def group(self) -> str:
        """Near-duplicate key: the file stem without a trailing variant number."""
        stem = self.key.rpartition("/")[2].rsplit(".", 1)[0].lower()
        return _VARIANT_SUFFIX.sub("", stem) or stem


@dataclass
class BuildResult:
    output: Path
    stats: dict[str, Any]
    counts: dict[str, int]
    seconds: float


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def scan_tree(root: Path) -> list[Source]:
    """All PNG paths under `root/png`, grouped by the real file they resolve to."""
    png_root = os.path.realpath(root / "png")
    svg_root = os.path.realpath(root / "svg")
    sources: dict[str, Source] = {}
    for dirpath, dirnames, filenames in os.walk(png_root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(".png"):
                continue
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if not (_inside(real, png_root) and os.path.isfile(real)):
                continue
            rel = os.path.relpath(path, png_root).replace(os.sep, "/")
            key = os.path.relpath(real, png_root).replace(os.sep, "/")
            source = sources.setdefault(key, Source(key))
            source.paths += 1
            category = rel.rpartition("/")[0]
            if category not in source.categories:
                source.categories.append(category)
            svg_path = os.path.join(svg_root, rel[: -len(".png")] + ".svg")
            svg_real = os.path.realpath(svg_path)
            if _inside(svg_real, svg_root) and os.path.isfile(svg_real):
                svg_key = os.path.relpath(svg_real, svg_root).replace(os.sep, "/")
                if svg_key not in source.svgs:
                    source.svgs.append(svg_key)
    for source in sources.values():
        source.categories.sort()
        source.svgs.sort()
    return [sources[key] for key in sorted(sources)]


def derive_labels(
    sources: Sequence[Source], metadata: dict[str, SvgMetadata]
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    """Rules 1-5 of `labels.py` for every source, before the minimum-frequency cut.

    Returns (labels per source key, top-level category labels per source key, the plural ->
    singular map that was applied).
    """
    multiword_authors = {
        rules.normalise_author(a)
        for meta in metadata.values()
        for a in meta.authors
        if len(rules.normalise_author(a).split()) >= 2
    }
    folder_words = {
        token
        for source in sources
        for category in source.categories
        for token in rules.folder_tokens(category)
    }
    raw: dict[str, list[str]] = {}
    top: dict[str, list[str]] = {}
    for source in sources:
        tokens: list[str] = []
        tops: list[str] = []
        for category in source.categories:
            folder = rules.folder_tokens(category)
            tokens += folder
            first = rules.folder_tokens(category.split("/", 1)[0])
            tops += first
        for svg in source.svgs:
            meta = metadata.get(svg)
            if meta is None:
                continue
            tokens += rules.keyword_tokens(
                meta.keywords,
                author_names=multiword_authors,
                own_author_parts=rules.name_parts(meta.authors),
                protected=folder_words,
            )
        raw[source.key] = tokens
        top[source.key] = tops
    singular = rules.build_singular_map({t for tokens in raw.values() for t in tokens})
    labels = {key: rules.apply_singular(tokens, singular) for key, tokens in raw.items()}
    tops_out = {key: rules.apply_singular(tokens, singular) for key, tokens in top.items()}
    return labels, tops_out, singular


def cap_per_folder(sources: Sequence[Source], cap: int, seed: int) -> tuple[list[Source], int]:
    """Keep at most `cap` drawings per real folder (seeded sample); 0 disables the cap."""
    if cap <= 0:
        return list(sources), 0
    by_folder: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        by_folder[source.folder].append(source)
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for folder in sorted(by_folder):
        members = by_folder[folder]
        if len(members) > cap:
            chosen = rng.choice(len(members), size=cap, replace=False)
            members = [members[i] for i in sorted(chosen)]
        keep.update(s.key for s in members)
    kept = [s for s in sources if s.key in keep]
    return kept, len(sources) - len(kept)


def _image_name(key: str, fmt: str) -> str:
    return "images/" + key.rsplit(".", 1)[0] + "." + fmt


def _object_name(key: str) -> str:
    return "objects/" + key


def render_source(src: Path, output: Path, key: str, config: OpenClipartConfig) -> str:
    """Write the RGB-on-white image (and the alpha cut-out); return "ok" or a skip reason."""
    try:
        rgba = load_rgba(src, max_pixels=config.max_pixels)
        rgba = fit_within(rgba, max(config.max_side, config.object_side))
        cutout = trim_alpha(rgba)
        image = on_background(fit_within(rgba, config.max_side))
        save_rgb(image, output / _image_name(key, config.image_format), config.image_format)
        if config.write_objects:
            obj_path = output / _object_name(key)
            obj_path.parent.mkdir(parents=True, exist_ok=True)
            fit_within(cutout, config.object_side).save(obj_path, format="PNG")
    except TooLargeError:
        return "too_large"
    except TransparentImageError:
        return "empty"
    except (OSError, ValueError, SyntaxError):
        return "unreadable"
    return "ok"


def rules_text(
    config: OpenClipartConfig, singular: dict[str, str], vocabulary: Collection[str] = ()
) -> list[str]:
    used = {p: s for p, s in singular.items() if not vocabulary or s in vocabulary}
    plural_pairs = ", ".join(f"{p}→{s}" for p, s in sorted(used.items()))
    synonyms = ", ".join(f"{a}→{b}" for a, b in sorted(rules.SYNONYMS.items()) if a != b)
    return [
        "One image per real PNG file. Debian ships a drawing filed under several categories "
        "as symlinks to one PNG; the image gets the labels of every path that points to it.",
        "Folder labels: every component of the category path is a label "
        "(`animals/mammals/big_cats` → animal, mammal, big cat), except collection/theme "
        "folders: " + ", ".join(sorted(rules.DROP_FOLDERS)) + ".",
        "Keyword labels: the `rdf:li` items of each SVG's `dc:subject`; a keyword equal to a "
        "multi-word author name (from `dc:creator`/`dc:publisher`/`dc:rights`) is dropped; the "
        "rest is split on commas, semicolons and whitespace.",
        "Each token is NFKC-normalised and lower-cased; `_` and `-` become spaces; "
        "numbers and year-like tokens, `hash(0x…)`/hex tokens, e-mail addresses, URLs and "
        "tokens with `/`, `.`, `&` or `(` are dropped.",
        "Meta-keywords dropped: " + ", ".join(sorted(rules.META_KEYWORDS)) + ".",
        "Parts of the image's own author names are dropped unless they are also a category "
        "folder name (e.g. 'navy' from the author 'Royal Navy' on naval flags stays).",
        "Synonyms and variants merged: " + synonyms + ".",
        "Regular plurals become singular when the singular is itself a label "
        "(never for: " + ", ".join(sorted(rules.PLURAL_EXCEPTIONS)) + "; labels of the form "
        "'x and y' are kept); applied to final labels: " + (plural_pairs or "none") + ".",
        f"At most {config.max_per_folder or 'unlimited'} drawings per folder (seeded sample): "
        "`shapes/stars` holds 1,378 generated star polygons that would otherwise be a fifth "
        "of the data set.",
        f"Images over {config.max_pixels / 1e6:g} Mpx are skipped without decoding (PNG has "
        "no reduced-resolution decoding); the rest are composited on white, RGB, longest side "
        f"≤ {config.max_side} px (never upscaled), saved as {config.image_format.upper()}.",
        f"Labels on fewer than {config.min_count} images are dropped; images left with no "
        "label are dropped.",
        f"Split {'/'.join(f'{f:g}' for f in config.fractions)} (train/val/test) by iterative "
        "multilabel stratification over groups of near-duplicates (file stem without a "
        f"trailing variant number, e.g. `dog_head_02` → `dog_head`), seed {config.seed}.",
    ]


def build_openclipart(
    root: Path,
    output: Path,
    config: OpenClipartConfig | None = None,
    *,
    workers: int = 1,
    command: str = "",
    log: Log = print,
) -> BuildResult:
    """Build OpenClipart-ML from an unpacked tree (`root` holds `png/` and `svg/`)."""
    config = config or OpenClipartConfig()
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    sources, metadata = _scan(Path(root), counts, log)
    all_labels, top_labels, singular = derive_labels(sources, metadata)
    sources, counts["capped_out"] = cap_per_folder(sources, config.max_per_folder, config.seed)
    if config.limit:
        sources = sources[: config.limit]

    status = _render_all(Path(root) / "png", output, sources, config, workers, log)
    for reason in status.values():
        counts[f"skipped_{reason}" if reason != "ok" else "rendered"] += 1
    kept = [s for s in sources if status[s.key] == "ok"]
    final, vocabulary = _final_labels(kept, all_labels, config.min_count, counts)
    kept = [s for s in kept if s.key in final]

    assignment = stratified_group_split(
        [final[s.key] for s in kept], [s.group for s in kept], config.fractions, config.seed
    )
    split_rows = _write_splits(output, kept, assignment, final, config)
    write_labels(output / "labels.txt", vocabulary)
    paths = [p for s in kept for p in folder_paths(s.categories, singular, set(vocabulary))]
    write_hierarchy(output / HIERARCHY_FILE, folder_hierarchy(paths))
    _write_objects(output, kept, assignment, final, top_labels, set(vocabulary), config)

    seconds = time.monotonic() - started
    stats = label_statistics(split_rows, vocabulary)
    build = {
        "config": asdict(config),
        "counts": dict(sorted(counts.items())),
        "seconds": round(seconds, 1),
        "workers": workers,
        "source": {pkg: debian_version(Path(root), pkg) for pkg in ("png", "svg")},
    }
    rules = rules_text(config, singular, set(vocabulary))
    _write_stats_and_card(output, stats, build, _summary(counts, stats), rules, command)
    log(f"wrote {len(kept)} images, {len(vocabulary)} labels to {output} in {seconds:.0f} s")
    return BuildResult(output=output, stats=stats, counts=dict(counts), seconds=seconds)


def _write_stats_and_card(
    output: Path,
    stats: dict[str, Any],
    build: dict[str, Any],
    summary: str,
    rules: list[str],
    command: str,
) -> None:
    (output / "stats.json").write_text(
        json.dumps({"stats": stats, "build": build}, indent=2) + "\n", encoding="utf-8"
    )
    card = render_card(
        title="OpenClipart-ML",
        summary=summary,
        stats=stats,
        rules=rules,
        build=build,
        command=command or "python -m model_training.dataset_builders openclipart --output DIR",
        extra_sections=[
            ("Other files", _FILES),
            ("Known limitations", _LIMITATIONS),
            ("Licence", _LICENCE),
        ],
    )
    (output / "DATASET_CARD.md").write_text(card, encoding="utf-8")


def _scan(
    root: Path, counts: Counter[str], log: Log
) -> tuple[list[Source], dict[str, SvgMetadata]]:
    """The drawings of the tree and the metadata of their SVGs, counted in `counts`."""
    sources = scan_tree(root)
    counts["png_paths"] = sum(s.paths for s in sources)
    counts["unique_png_files"] = len(sources)
    log(f"scanned {counts['png_paths']} PNG paths → {len(sources)} unique drawings")
    svg_keys = sorted({svg for s in sources for svg in s.svgs})
    metadata = {key: read_svg_metadata(root / "svg" / key) for key in svg_keys}
    counts["svg_files"] = len(svg_keys)
    counts["svg_parse_fallbacks"] = sum(1 for m in metadata.values() if m.errors)
    counts["without_svg"] = sum(1 for s in sources if not s.svgs)
    log(f"read metadata of {len(svg_keys)} SVG files")
    return sources, metadata


def _final_labels(
    kept: Sequence[Source],
    all_labels: dict[str, list[str]],
    min_count: int,
    counts: Counter[str],
) -> tuple[dict[str, list[str]], list[str]]:
    """Each image's labels among those on at least `min_count` images (images left without
    one are dropped), and that vocabulary, sorted."""
    freq = Counter(label for s in kept for label in set(all_labels[s.key]))
    vocabulary = sorted(label for label, n in freq.items() if n >= min_count)
    vocab_set = set(vocabulary)
    counts["labels_before_min_count"] = len(freq)
    final: dict[str, list[str]] = {}
    for source in kept:
        chosen = sorted(set(all_labels[source.key]) & vocab_set)
        if chosen:
            final[source.key] = chosen
        else:
            counts["dropped_no_label"] += 1
    return final, vocabulary


def _write_splits(
    output: Path,
    kept: Sequence[Source],
    assignment: Sequence[int],
    final: dict[str, list[str]],
    config: OpenClipartConfig,
) -> dict[str, list[list[str]]]:
    """`train.jsonl`, `val.jsonl`, `test.jsonl`; returns each split's label lists."""
    split_rows: dict[str, list[list[str]]] = {name: [] for name in SPLITS}
    for split_index, name in enumerate(SPLITS):
        members = [s for s, a in zip(kept, assignment, strict=True) if a == split_index]
        rows = [
            {"image": _image_name(s.key, config.image_format), "labels": final[s.key]}
            for s in members
        ]
        write_jsonl(output / f"{name}.jsonl", rows)
        split_rows[name] = [final[s.key] for s in members]
    return split_rows


def _write_objects(
    output: Path,
    kept: Sequence[Source],
    assignment: Sequence[int],
    final: dict[str, list[str]],
    top_labels: dict[str, list[str]],
    vocabulary: set[str],
    config: OpenClipartConfig,
) -> None:
    """`objects.jsonl`: what OpenClipart-Scenes needs to know about each image's cut-out."""
    objects = [
        {
            "object": _object_name(s.key),
            "image": _image_name(s.key, config.image_format),
            "split": SPLITS[a],
            "labels": final[s.key],
            "top": sorted(set(top_labels[s.key]) & vocabulary),
            "categories": s.categories,
            "group": s.group,
        }
        for s, a in zip(kept, assignment, strict=True)
    ]
    write_jsonl(output / "objects.jsonl", objects)


_FILES = """\
`objects/` holds each image's alpha cut-out (RGBA PNG, trimmed to the visible pixels, longest
side ≤ the configured object size) and `objects.jsonl` one line per image with its cut-out,
split, labels, top-level category labels (`top`), source category folders and
near-duplicate group; OpenClipart-Scenes is built from these. `hierarchy.json` holds the
label hierarchy the category folders imply (parents and a category per label); exported
models carry it in their manifest.
"""

_LIMITATIONS = """\
- Labels are as good as the library's filing and its authors' keywords: a keyword list is
  sometimes pasted onto a whole set (e.g. one icon set carries dvb, internet, network,
  satellite, television and voip on every icon), and a missing label is not a negative.
- Folder labels are broad and overlap (`signs and symbols`, `sign`, `symbol`); icon sets
  (`computer/icons/...`) make `computer` and `icon` the most frequent labels.
- Near-duplicates are grouped only by file stem; visually similar drawings with different
  names (colour variants under other names, generated series) may still straddle splits.
- Drawings over the pixel limit (15 in Debian's 0.18 packages, up to 623 Mpx) are skipped,
  not downscaled.
"""

_LICENCE = """\
The Open Clip Art Library 0.18 drawings are dedicated to the public domain (Creative Commons
Public Domain Dedication; see `/usr/share/doc/openclipart-svg/copyright` in the packages).
The derived images, cut-outs and labels here are offered under the same terms.
"""


def debian_version(root: Path, kind: str) -> str:
    """`openclipart-<kind>` package version from the unpacked changelog, or "unknown"."""
    changelog = root.parent / "doc" / f"openclipart-{kind}" / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return "unknown"
    match = re.search(r"\(([^)]+)\)", first)
    return f"openclipart-{kind} {match.group(1)}" if match else "unknown"


def _summary(counts: Counter[str], stats: dict[str, Any]) -> str:
    return (
        "A multilabel image data set built from the Open Clip Art Library 0.18 as packaged by "
        "Debian (`openclipart-png`, `openclipart-svg`). Labels come from the library's category "
        "folders and the keywords its authors wrote into each SVG (`dc:subject`), normalised "
        "by the rules below. "
        f"The packages hold {counts['png_paths']:,} PNG paths that resolve to "
        f"{counts['unique_png_files']:,} distinct drawings; {stats['images']:,} images with "
        f"{stats['labels']} labels remain after the rules."
    )


def _render_all(
    png_root: Path,
    output: Path,
    sources: Sequence[Source],
    config: OpenClipartConfig,
    workers: int,
    log: Log,
) -> dict[str, str]:
    jobs = [(png_root / s.key, output, s.key, config) for s in sources]
    status: dict[str, str] = {}
    if workers > 1:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            results = pool.starmap(render_source, jobs, chunksize=16)
        status = {job[2]: result for job, result in zip(jobs, results, strict=True)}
    else:
        for n, job in enumerate(jobs, 1):
            status[job[2]] = render_source(*job)
            if n % 500 == 0:
                log(f"  rendered {n}/{len(jobs)}")
    return status
