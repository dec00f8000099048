"""The explain graph of an export (manifest `onnx.explain`): traced, checked and verified
against PyTorch like model.onnx, in a file of its own. ONNX Runtime runs every node of a graph
whatever outputs are fetched (benchmarks/RESULTS.md#per-tag-heatmaps-issue-19), so a second
output in model.onnx would cost every /tag request; a second file costs only the requests
that ask for heatmaps. What a map means per head: docs/method.md#where-a-tag-comes-from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mltag_artifact import ExplainGraph, Preprocessing

from ..data.transforms import preprocessing_for
from ..rundir import TrainedRun
from .errors import ExportError
from .graph import EXPLAIN_NAME, INPUT_NAME, ExplainExportGraph, example_input, export_onnx
from .scoring import sample_batches

log = logging.getLogger("mltag.export")

EXPLAIN_FILE = "explain.onnx"
# Heatmaps are compared relative to each map's scale (a CAM of logits can reach tens).
HEATMAP_TOLERANCE = 1e-4


def trace_explain(run: TrainedRun, prep: Preprocessing, path: Path, opset: int) -> ExplainGraph:
    """Trace the explain graph to `path`, check it; its manifest entry (sha256 a placeholder,
    filled in by write_artifact)."""
    graph = ExplainExportGraph(run.model, prep)
    with torch.no_grad():
        _, maps = graph(example_input(prep, batch=1))
    _, _, height, width = maps.shape
    try:
        export_onnx(graph, prep, str(path), len(run.labels), opset)
    except Exception as e:
        raise ExportError(
            f"torch.onnx.export failed for the explain graph of {run.config.model.head} at "
            f"opset {opset}: {type(e).__name__}: {e}"
        ) from e
    check_explain_onnx(path, len(run.labels), height, width)
    return ExplainGraph(
        file=EXPLAIN_FILE,
        sha256="0" * 64,
        output_name=EXPLAIN_NAME,
        method=graph.method,
        height=int(height),
        width=int(width),
    )


def check_explain_onnx(path: Path, num_labels: int, height: int, width: int) -> None:
    """`onnx.checker`, one input, and the heatmap output (batch, C, h, w) with C, h, w fixed
    (declared where tracing left them symbolic: they are fixed by the input size)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the explain graph: {e}") from e
    model = onnx.load(str(path), load_external_data=False)
    if [i.name for i in model.graph.input] != [INPUT_NAME]:
        raise ExportError(f"the explain graph's inputs are {[i.name for i in model.graph.input]}")
    output = next((o for o in model.graph.output if o.name == EXPLAIN_NAME), None)
    if output is None:
        raise ExportError(f"the explain graph has no output {EXPLAIN_NAME!r}")
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ExportError(f"the explain graph's {EXPLAIN_NAME!r} has {len(dims)} axes, not 4")
    for dim, size in zip(list(dims)[1:], (num_labels, height, width), strict=True):
        if dim.dim_value and dim.dim_value != size:
            raise ExportError(f"{EXPLAIN_NAME!r} has an axis of {dim.dim_value}, not {size}")
        dim.dim_value = size
    onnx.save(model, str(path))


@torch.no_grad()
def torch_explain(run: TrainedRun, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch probabilities (N, C) and raw heatmaps (N, C, h, w) of the run's model on the
    decoded images (float32 NCHW, normalised by numpy as in training's evaluation)."""
    prep = preprocessing_for(run.config.data)
    model = run.model.eval()
    probs, maps = [], []
    for batch in sample_batches(paths, prep):
        p, m = model.explain(torch.from_numpy(batch))
        probs.append(p.float().numpy())
        maps.append(m.float().numpy())
    return np.concatenate(probs), np.concatenate(maps)


def explain_parity(
    run: TrainedRun, runner: Any, paths: Sequence[Path], tolerance: float
) -> dict[str, Any]:
    """ONNX Runtime's explain graph against PyTorch on the same decoded images: probabilities
    (absolute, <= `tolerance`) and heatmaps (relative to each map's largest |value|, at least
    1, <= HEATMAP_TOLERANCE). Raises ExportError beyond them; the facts for the manifest."""
    want_p, want_m = torch_explain(run, paths)
    got_p, got_m = [], []
    for batch in sample_batches(paths, runner.manifest.preprocessing):
        p, m = runner.run_explain(batch)
        got_p.append(p)
        got_m.append(m)
    probs, maps = np.concatenate(got_p), np.concatenate(got_m)
    if maps.shape != want_m.shape or not np.all(np.isfinite(maps)):
        raise ExportError(f"explain graph: ORT heatmaps {maps.shape}, PyTorch {want_m.shape}")
    p_diff = float(np.max(np.abs(probs.astype(np.float64) - want_p)))
    scale = np.maximum(np.abs(want_m).max(axis=(2, 3), keepdims=True), 1.0)
    m_diff = float(np.max(np.abs(maps.astype(np.float64) - want_m) / scale))
    if not (p_diff <= tolerance and m_diff <= HEATMAP_TOLERANCE):
        raise ExportError(
            f"the explain graph disagrees with PyTorch: max |Δprobability| = {p_diff:.3g} "
            f"(<= {tolerance:g}), max relative |Δheatmap| = {m_diff:.3g} (<= "
            f"{HEATMAP_TOLERANCE:g}); refusing to write it"
        )
    log.info("explain parity: |Δp| %.3g, relative |Δheatmap| %.3g on %d images",
             p_diff, m_diff, len(paths))  # fmt: skip
    return {"max_abs_diff": p_diff, "heatmap_max_rel_diff": m_diff, "images": len(paths),
            "heatmap_tolerance": HEATMAP_TOLERANCE}  # fmt: skip
