"""Command line for export, mounted into `mltag-train` by `model_training.cli`:

    mltag-train export --run RUN_DIR --output ARTIFACT_DIR [--opset N] [--no-explain]
                       [--int8 --calib-data PATH --max-int8-drop X --allow-int8-drop
                       --int8-float-stages N]
    mltag-train evaluate --artifact ARTIFACT_DIR --data ANNOTATIONS [--format F]

Heavy imports (torch, onnx) happen inside the handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

EXPORT_DESCRIPTION = """\
Export the selected checkpoint of a training run as a self-describing ONNX artifact
(model.onnx + manifest.json + MODEL_CARD.md) that `mltag-serve` loads. The graph takes raw
uint8 pixels (NHWC) and outputs per-label probabilities; explain.onnx, a second graph, adds
per-label heatmaps (POST /tag?explain=true). Every export is verified before it is written:
onnx.checker, the service's own model checks, and ONNX Runtime vs PyTorch on real validation
images (max |difference| <= 1e-4 on probabilities); it fails loudly otherwise.
"""


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `export` on an argparse sub-parser collection; returns the new parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="export a training run as a verified ONNX artifact for the service",
        description=EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--output", required=True, help="artifact directory to write")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the run's export.opset, 17)")
    p.add_argument(
        "--input-format",
        choices=["uint8-nhwc", "float32-nchw"],
        default="uint8-nhwc",
        help="graph input: raw uint8 pixels normalised inside the graph (default, faster end "
        "to end) or float32 NCHW normalised by the client",
    )
    p.add_argument("--name", help="model name in the manifest (default: the run's export.name)")
    p.add_argument("--version", help="model version (default: the run's export.version)")
    p.add_argument(
        "--val-data",
        help="annotation file to verify on (default: the run's own validation split)",
    )
    p.add_argument(
        "--verify-images",
        type=int,
        default=32,
        help="validation images for the ORT-vs-PyTorch check (default 32)",
    )
    p.add_argument("--force", action="store_true", help="replace a non-empty --output")
    p.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="leave out explain.onnx, the per-label heatmaps graph (POST /tag?explain=true); "
        "it roughly doubles the artifact's size, and is never run without explain",
    )
    _add_int8_arguments(p.add_argument_group("int8 (static QDQ quantisation)"))
    p.set_defaults(func=export_command)
    return p


def _add_int8_arguments(q: Any) -> None:
    q.add_argument("--int8", action="store_true", help="write an int8 model instead of fp32")
    q.add_argument(
        "--calib-data",
        help="calibration images: a directory or an annotation file (default: a random draw "
        "from the run's training split)",
    )
    q.add_argument("--calib-images", type=int, default=128, help="calibration images (default 128)")
    q.add_argument(
        "--max-int8-drop",
        type=float,
        default=1.0,
        help="refuse when int8 validation mAP is more than this many points below fp32 "
        "(default 1.0)",
    )
    q.add_argument(
        "--int8-float-stages",
        type=int,
        default=0,
        metavar="N",
        help="keep the backbone's first N stages float as well (default 0); the bundled "
        "clip-art model uses 2: its high-resolution stages lose accuracy in int8",
    )
    q.add_argument(
        "--allow-int8-drop",
        action="store_true",
        help="export even when the drop exceeds the bound (warns loudly)",
    )


def export_command(args: argparse.Namespace) -> int:
    """Handler of `mltag-train export`."""
    _log_to_stderr()
    from .errors import ExportError

    try:
        from .exporter import export_run

        artifact = export_run(
            args.run,
            args.output,
            opset=args.opset,
            int8=args.int8,
            calib_data=args.calib_data,
            calib_images=args.calib_images,
            max_int8_drop=args.max_int8_drop,
            allow_int8_drop=args.allow_int8_drop,
            int8_float_stages=args.int8_float_stages,
            input_format=args.input_format,
            val_data=args.val_data,
            verify_images=args.verify_images,
            name=args.name,
            version=args.version,
            overwrite=args.force,
            explain=args.explain,
        )
    except ExportError as e:
        print(f"mltag-train export: error: {e}", file=sys.stderr)
        return 2
    m = artifact.manifest
    facts = m.architecture.details.get("export", {})
    summary: dict[str, Any] = {
        "artifact": str(artifact.directory),
        "model": f"{m.name} {m.version}",
        "labels": len(m.labels),
        "input": f"{m.preprocessing.input_dtype} {m.preprocessing.layout} "
        f"{m.preprocessing.height}x{m.preprocessing.width}",
        "parity_max_abs_diff": facts.get("parity", {}).get("max_abs_diff"),
        "sha256": m.onnx.sha256,
        "explain": m.onnx.explain.method if m.onnx.explain else None,
    }
    if "int8" in facts:
        q = facts["int8"]
        summary["int8"] = {k: q[k] for k in ("val_mAP_fp32", "val_mAP_int8", "val_mAP_drop")}
    print(json.dumps(summary, indent=1))
    return 0


def evaluate_artifact_command(args: argparse.Namespace) -> int:
    """Handler of `mltag-train evaluate --artifact DIR --data FILE`: prints the summary, writes
    the full result (per-label AP included) to `--output` when given. Reads `artifact`, `data`
    and, when present, `format`, `images_root`, `batch_size`, `output` from `args`."""
    from ..data import DataError
    from .errors import ExportError

    try:
        from .evaluate import evaluate_artifact

        result = evaluate_artifact(
            args.artifact,
            args.data,
            data_format=getattr(args, "format", None),
            images_root=getattr(args, "images_root", None),
            batch_size=getattr(args, "batch_size", None) or 16,
        )
    except (ExportError, DataError, FileNotFoundError) as e:
        print(f"mltag-train evaluate: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    output = getattr(args, "output", None)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    metrics = result["metrics"]
    summary = {k: round(v, 2) if isinstance(v, float) else v for k, v in metrics.items()}
    print(json.dumps(summary, indent=1))
    return 0


def _log_to_stderr() -> None:
    logger = logging.getLogger("mltag.export")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
