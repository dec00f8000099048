"""Command line of the data set builders: `python -m model_training.dataset_builders COMMAND`.

`add_commands(subparsers)` registers the same commands on another parser, so the training
CLI can expose them as `mltag-train data openclipart|scenes ...`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_CACHE = Path(".cache/openclipart")


def _fraction_triple(values: list[float]) -> tuple[float, float, float]:
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise argparse.ArgumentTypeError("--split takes three non-negative fractions")
    return (values[0], values[1], values[2])


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return "python -m model_training.dataset_builders " + shlex.join(args)


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for the dataset card (also when mounted in another CLI)."""
    line: str | None = getattr(args, "command_line", None)
    return line or " ".join([Path(sys.argv[0]).name, shlex.join(sys.argv[1:])])


def _run_openclipart(args: argparse.Namespace) -> int:
    from .fetch import FetchError, fetch_openclipart, find_root
    from .openclipart import OpenClipartConfig, build_openclipart

    try:
        if args.root is not None:
            root = find_root(Path(args.root))
            if root is None:
                print(f"error: no png/ and svg/ folders under {args.root}", file=sys.stderr)
                return 2
        else:
            root = fetch_openclipart(Path(args.cache), apt_update=args.apt_update)
        config = OpenClipartConfig(
            min_count=args.min_count,
            fractions=_fraction_triple(args.split),
            seed=args.seed,
            max_side=args.max_side,
            object_side=args.object_side,
            max_pixels=args.max_pixels,
            max_per_folder=args.max_per_folder,
            image_format=args.format,
            write_objects=not args.no_objects,
            limit=args.limit,
        )
    except (FetchError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = build_openclipart(
        root, Path(args.output), config, workers=args.workers, command=_command_line(args)
    )
    s = result.stats
    print(
        f"OpenClipart-ML: {s['images']} images, {s['labels']} labels, "
        f"{s['cardinality']['mean']:.2f} labels/image, {result.seconds:.0f} s → {args.output}"
    )
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    from .scenes import ScenesConfig, build_scenes

    try:
        config = ScenesConfig(
            scenes=(args.train, args.val, args.test),
            canvas=args.canvas,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            scale=(args.scale[0], args.scale[1]),
            min_visible=args.min_visible,
            top_labels=args.top_labels,
            seed=args.seed,
            image_format=args.format,
            quality=args.quality,
            balance=args.balance,
        )
        result = build_scenes(
            Path(args.source), Path(args.output), config, command=_command_line(args)
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = result["stats"]
    print(
        f"OpenClipart-Scenes: {s['images']} scenes, {s['labels']} labels, "
        f"{s['cardinality']['mean']:.2f} labels/image → {args.output}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `openclipart` and `scenes` on a subparsers object."""
    _add_openclipart(sub)
    _add_scenes(sub)


def _add_openclipart(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    oc = sub.add_parser(
        "openclipart",
        help="build OpenClipart-ML from Debian's openclipart-png/-svg packages",
        description="Download Debian's openclipart-png and openclipart-svg with `apt-get "
        "download` (no root needed if apt lists exist) into --cache, unpack with `dpkg -x`, "
        "and write a multilabel data set (JSONL splits, labels.txt, DATASET_CARD.md, images/, "
        "objects/) to --output.",
    )
    oc.add_argument("--output", required=True, help="folder to write the data set to")
    oc.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE),
        help=f"download/unpack folder, reused across builds (default {DEFAULT_CACHE})",
    )
    oc.add_argument(
        "--root",
        default=None,
        help="use an already unpacked tree holding png/ and svg/ (e.g. /usr/share/openclipart)"
        " instead of downloading",
    )
    oc.add_argument(
        "--apt-update",
        action="store_true",
        help="run `apt-get update` (as root) before downloading",
    )
    oc.add_argument(
        "--min-count", type=int, default=15, help="drop labels on fewer images (default 15)"
    )
    oc.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.7, 0.1, 0.2],
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions (default 0.7 0.1 0.2)",
    )
    _add_openclipart_build_options(oc)
    oc.set_defaults(func=_run_openclipart)


def _add_openclipart_build_options(oc: argparse.ArgumentParser) -> None:
    oc.add_argument("--seed", type=int, default=0, help="split and sampling seed (default 0)")
    oc.add_argument(
        "--max-side",
        type=int,
        default=512,
        help="longest side of written images in px (default 512)",
    )
    oc.add_argument(
        "--object-side",
        type=int,
        default=256,
        help="longest side of the alpha cut-outs in objects/ (default 256)",
    )
    oc.add_argument(
        "--max-pixels",
        type=int,
        default=50_000_000,
        help="skip PNGs with more pixels, undecoded (default 50,000,000)",
    )
    oc.add_argument(
        "--max-per-folder",
        type=int,
        default=300,
        help="at most this many drawings per folder, 0 for no cap (default 300)",
    )
    oc.add_argument(
        "--format",
        choices=["png", "jpg"],
        default="png",
        help="image format of images/ (default png)",
    )
    oc.add_argument(
        "--no-objects",
        action="store_true",
        help="do not write objects/ (then `scenes` cannot use this build)",
    )
    oc.add_argument(
        "--workers", type=int, default=1, help="processes for image conversion (default 1)"
    )
    oc.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)


def _add_scenes(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sc = sub.add_parser(
        "scenes",
        help="build OpenClipart-Scenes (multi-object composites) from an OpenClipart-ML build",
        description="Composite 2-5 clip-art cut-outs per canvas from an OpenClipart-ML build "
        "(--source, which must contain objects/ and objects.jsonl), keeping each source "
        "drawing in its own split, and write JSONL splits, labels.txt and DATASET_CARD.md.",
    )
    sc.add_argument("--source", required=True, help="an OpenClipart-ML output folder")
    sc.add_argument("--output", required=True, help="folder to write the scenes to")
    sc.add_argument("--train", type=int, default=8000, help="train scenes (default 8000)")
    sc.add_argument("--val", type=int, default=1000, help="validation scenes (default 1000)")
    sc.add_argument("--test", type=int, default=2000, help="test scenes (default 2000)")
    sc.add_argument("--canvas", type=int, default=384, help="canvas side in px (default 384)")
    sc.add_argument("--min-objects", type=int, default=2, help="objects per scene, at least")
    sc.add_argument("--max-objects", type=int, default=5, help="objects per scene, at most")
    sc.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=[0.22, 0.5],
        metavar=("LO", "HI"),
        help="object longest side as a fraction of the canvas (default 0.22 0.5)",
    )
    sc.add_argument(
        "--min-visible",
        type=float,
        default=0.6,
        help="share of each object that must stay visible (default 0.6)",
    )
    sc.add_argument(
        "--top-labels",
        type=int,
        default=30,
        help="frequent finer labels kept besides the top-level categories (default 30)",
    )
    sc.add_argument(
        "--balance",
        type=float,
        default=0.5,
        help="object weight = category size ** -BALANCE (default 0.5)",
    )
    sc.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    sc.add_argument(
        "--format", choices=["png", "jpg"], default="jpg", help="image format (default jpg)"
    )
    sc.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    sc.set_defaults(func=_run_scenes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_training.dataset_builders",
        description="Build the OpenClipart multilabel data sets.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = _command(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
