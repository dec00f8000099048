"""`mltag-train photo-model`: build the photo tagger artifact (docs/photo-model.md)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_photo_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "photo-model",
        help="build the photo tagger: ImageNet Lite0 classifier + WordNet hierarchy (offline)",
        description="Build the photo tagger artifact from the offline ImageNet "
        "EfficientNet-Lite0 weights and WordNet 3.0 (apt-get install wordnet-base): each tag is "
        "an ImageNet class or a WordNet ancestor of classes, scored as the summed probability "
        "of the classes under it. About a minute on 2 CPU cores.",
    )
    p.add_argument("--output", required=True, help="artifact directory (replaced if present)")
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet", help="holds data.noun")
    p.add_argument("--name", default="mltag-photo")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--base-threshold", type=float, default=0.3,
                   help="threshold of narrow tags (default 0.3)")  # fmt: skip
    p.add_argument(
        "--chance-factor",
        type=float,
        default=2.0,
        help="broad tags need this many times their chance share (default 2)",
    )
    p.add_argument(
        "--check-images",
        nargs="*",
        default=[],
        help="photos for the ONNX Runtime vs PyTorch check (default: random pixels)",
    )
    p.set_defaults(func=_photo_model)


def _photo_model(args: argparse.Namespace) -> int:
    from ..export.errors import ExportError
    from .builder import PhotoModelOptions, build_photo_model
    from .thresholds import ThresholdPolicy
    from .wordnet import WordNetError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    try:
        options = PhotoModelOptions(
            wordnet_dir=Path(args.wordnet_dir),
            name=args.name,
            version=args.version,
            thresholds=ThresholdPolicy(base=args.base_threshold, chance_factor=args.chance_factor),
            check_images=tuple(Path(p) for p in args.check_images),
        )
        artifact = build_photo_model(args.output, options)
    except (WordNetError, ExportError, ValueError) as e:
        print(f"mltag-train photo-model: error: {e}", file=sys.stderr)
        return 2
    m = artifact.manifest
    print(f"wrote {artifact.directory}: {m.name} {m.version}, {len(m.labels)} tags, "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0
