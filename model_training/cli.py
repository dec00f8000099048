"""`mltag-train`: the training package's command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
mltag training tools. Train a multilabel tagger on your own images and export it as a
self-describing ONNX artifact (model.onnx + manifest.json + MODEL_CARD.md) that
`mltag-serve` loads.
"""


def _demo_artifact(args: argparse.Namespace) -> int:
    from .demo import write_demo_artifact

    artifact = write_demo_artifact(
        args.output, size=args.size, layout=args.layout, input_dtype=args.dtype
    )
    m = artifact.manifest
    print(f"wrote {artifact.directory}: {m.name} {m.version}, labels {', '.join(m.labels)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltag-train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo-artifact",
        help="build the hand-weighted colour demo artifact (no torch, no data needed)",
        description="Write a small real ONNX artifact that tags an image's dominant colour. "
        "Used by `make run` until a trained default model is bundled, and by the tests.",
    )
    demo.add_argument("--output", required=True, help="artifact directory to write")
    demo.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    demo.add_argument("--layout", choices=["NHWC", "NCHW"], default="NHWC")
    demo.add_argument("--dtype", choices=["uint8", "float32"], default="uint8")
    demo.set_defaults(func=_demo_artifact)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
