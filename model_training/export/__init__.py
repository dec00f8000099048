"""Export a training run as a self-describing, verified ONNX artifact, and evaluate artifacts
through the service's own code path.

    export_run(run_dir, output_dir, opset=17, int8=False, ...) -> Artifact
    evaluate_artifact(artifact_dir, data, ...) -> dict (metrics, per-label AP)

The command line (`mltag-train export`, `mltag-train evaluate --artifact`) is in `.cli`.
Names are imported lazily: `model_training.cli` imports `.cli` for `--help` without paying for
torch and ONNX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..rundir import TrainedRun, load_run
    from .errors import ExportError
    from .evaluate import evaluate_artifact
    from .exporter import FP32_TOLERANCE, build_manifest, check_onnx, export_run, parity
    from .graph import (
        INPUT_FORMATS,
        ConstantAttentionGCNHead,
        ExportGraph,
        freeze_for_export,
        preprocessing_for_input,
    )

_WHERE = {
    "evaluate_artifact": ".evaluate",
    "FP32_TOLERANCE": ".exporter",
    "build_manifest": ".exporter",
    "check_onnx": ".exporter",
    "export_run": ".exporter",
    "parity": ".exporter",
    "INPUT_FORMATS": ".graph",
    "ConstantAttentionGCNHead": ".graph",
    "ExportGraph": ".graph",
    "freeze_for_export": ".graph",
    "preprocessing_for_input": ".graph",
    "ExportError": ".errors",
    "TrainedRun": "..rundir",
    "load_run": "..rundir",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
