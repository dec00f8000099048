"""Export a training run as a self-describing, verified ONNX artifact, and evaluate artifacts
through the service's own code path.

    export_run(run_dir, output_dir, opset=17, int8=False, ...) -> Artifact
    evaluate_artifact(artifact_dir, data, ...) -> dict (metrics, per-label AP)

The command line (`mltag-train export`, `mltag-train evaluate --artifact`) is in `.cli`.
"""

from .evaluate import evaluate_artifact
from .exporter import FP32_TOLERANCE, build_manifest, check_onnx, export_run, parity
from .graph import (
    INPUT_FORMATS,
    ConstantAttentionGCNHead,
    ExportGraph,
    freeze_for_export,
    preprocessing_for_input,
)
from .run import ExportError, TrainedRun, load_run

__all__ = [
    "FP32_TOLERANCE",
    "INPUT_FORMATS",
    "ConstantAttentionGCNHead",
    "ExportError",
    "ExportGraph",
    "TrainedRun",
    "build_manifest",
    "check_onnx",
    "evaluate_artifact",
    "export_run",
    "freeze_for_export",
    "load_run",
    "parity",
    "preprocessing_for_input",
]
