"""`mltag-train`: the training package's command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .dataset_builders.cli import add_commands as add_dataset_commands
from .export.cli import add_export_parser, evaluate_artifact_command
from .photo.cli import add_photo_parser

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

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


def _train(args: argparse.Namespace) -> int:
    # torch and friends are imported here, not at module import: `mltag-train --help` stays fast.
    from .config import ConfigError, load_config
    from .data import DataError
    from .models import PretrainedWeightsError
    from .rundir import RunDir
    from .trainer import fit

    try:
        config = args.config
        if config is None and args.resume:  # continue with the run's own resolved config
            config = RunDir(args.output).config
        cfg = load_config(config, args.set or [])
        final = fit(cfg, args.output, resume=args.resume)
    except (ConfigError, DataError, PretrainedWeightsError, FileExistsError,
            FileNotFoundError) as e:  # fmt: skip
        print(f"mltag-train train: error: {e}", file=sys.stderr)
        return 2
    if final:
        print(
            json.dumps({k: final[k] for k in ("selected", "val", "test") if k in final}, indent=1)
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.artifact:
        return evaluate_artifact_command(args)
    from .config import ConfigError
    from .data import DataError
    from .trainer import evaluate_run

    try:
        result = evaluate_run(
            args.run,
            args.data,
            data_format=args.format,
            images_root=args.images_root,
            device=args.device,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"mltag-train evaluate: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    summary = {k: round(v, 2) if isinstance(v, float) else v for k, v in result["metrics"].items()}
    print(json.dumps(summary, indent=1))
    return 0


def _floor(text: str | None) -> float | str | None:
    from .config import ConfigError

    if text is None or text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--floor {text!r}: expected auto or a number between 0 and 1")
    return value


def _calibrate(args: argparse.Namespace) -> int:
    from .calibration import CalibrationError
    from .config import ConfigError
    from .data import DataError
    from .trainer import recalibrate_run

    try:
        final = recalibrate_run(args.run, args.rule, device=args.device, floor=_floor(args.floor))
    except (CalibrationError, ConfigError, DataError, FileNotFoundError) as e:
        print(f"mltag-train calibrate: error: {e}", file=sys.stderr)
        return 2
    keys = ("mAP", "CF1@0.5", "OF1@0.5", "CP@thr", "CF1@thr", "OP@thr", "OF1@thr")
    summary = {
        split: {k: round(final[split][k], 2) for k in keys if k in final[split]}
        for split in ("val", "test")
        if split in final
    }
    calibration = {k: v for k, v in final["calibration"].items() if k != "fallback_f1_labels"}
    print(json.dumps({**summary, "calibration": calibration}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltag-train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_calibrate(sub)
    add_export_parser(sub)
    add_photo_parser(sub)
    data = sub.add_parser(
        "data",
        help="build the OpenClipart data sets (no torch needed)",
        description="Build OpenClipart-ML and OpenClipart-Scenes from Debian's packages.",
    )
    add_dataset_commands(data.add_subparsers(dest="dataset", required=True, metavar="DATASET"))
    return parser


def _add_demo(sub: Subparsers) -> None:
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


def _add_train(sub: Subparsers) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from a YAML config into a run directory",
        description="Train a multilabel tagger. The run directory receives the resolved config, "
        "metrics.json, per-class AP, thresholds, curves and checkpoints. Multi-GPU / multi-node: "
        "torchrun --nproc_per_node N -m model_training train ...",
    )
    train.add_argument("--config", help="YAML config (see configs/); defaults when omitted")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )
    train.add_argument("--output", required=True, help="run directory to create")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output from its last checkpoint",
    )
    train.set_defaults(func=_train)


def _add_evaluate(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="evaluate a trained run on an annotation file",
        description="Evaluate the selected checkpoint of a run (mAP, CF1/OF1 at 0.5 and at "
        "the run's calibrated thresholds, per-class AP) on an annotation file read with the "
        "run's label list.",
    )
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", help="run directory written by `train` (PyTorch)")
    target.add_argument(
        "--artifact",
        help="exported artifact: evaluate it with ONNX Runtime through the service's "
        "preprocessing (deployed accuracy)",
    )
    ev.add_argument("--data", required=True, help="annotation file (format of the run's config)")
    ev.add_argument("--format", choices=["coco", "voc", "csv", "jsonl"], help="annotation format")
    ev.add_argument("--images-root", help="directory the image paths are relative to")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--num-workers", type=int)
    ev.add_argument("--output", help="write the full result (with per-class AP) as JSON here")
    ev.set_defaults(func=_evaluate)


def _add_calibrate(sub: Subparsers) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="choose a finished run's per-label thresholds again (F1 or a precision target)",
        description="Re-score the run's validation split, choose per-label thresholds by RULE "
        "and evaluate test once: 'f1' (F1-optimal) or 'precision:P' (per label the lowest "
        "threshold whose validation precision is >= P, F1-optimal where none is). Rewrites "
        "thresholds.json, per_class.csv and metrics.json's final val/test/calibration; export "
        "the run again to ship them.",
    )
    cal.add_argument("--run", required=True, help="run directory written by `train`")
    cal.add_argument("--rule", required=True, help="f1 | precision:P, e.g. precision:0.8")
    cal.add_argument(
        "--floor", help="lowest threshold: a number or auto (default: the run's threshold_floor)"
    )
    cal.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    cal.set_defaults(func=_calibrate)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
