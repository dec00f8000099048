"""int8 static QDQ quantisation with ONNX Runtime. Static QDQ speeds up convolutional
backbones on CPU; dynamic quantisation slows convolutions down, so it is not offered (see
benchmarks/RESULTS.md#int8-static-qdq)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("mltag.export")
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize_static_qdq(
    fp32_path: Path,
    int8_path: Path,
    calibration: Iterable[np.ndarray],
    input_name: str,
    per_channel: bool = True,
    quantize_scope: str | None = "/backbone/",
    symbolic_shapes: bool = True,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
) -> None:
    """Write an int8 QDQ model calibrated on `calibration` batches of model input, the
    activation ranges by `method` (CALIBRATION_METHODS: minmax, percentile, entropy).

    Only nodes whose name contains `quantize_scope` are quantised (None: all), and never the
    stem. By default that is the backbone: the head stays float, because a cosine head's output
    is multiplied by the AAM scale (s≈23) before the sigmoid, so uint8 steps of 2/255 on cosines
    would become logit steps of ~0.2; the head is a negligible share of the cost anyway. The
    stem (first convolution and its activation) stays float too: quantising the normalised
    image and the stem cost validation mAP, keeping it float cost nothing, for a small share
    of the MACs (benchmarks/RESULTS.md#int8-static-qdq). `symbolic_shapes=False` skips ORT's
    symbolic shape inference, which cannot complete on an explain graph (attention weights
    as an output) and then leaves a model dump in the working directory. Nodes whose name
    contains one of `keep_float` stay float as well.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = fp32_path
    prepared = int8_path.with_name(int8_path.stem + ".pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        # Shape inference + graph optimisation first, as ORT's quantisation guide advises.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=not symbolic_shapes)
        source = prepared
    except Exception as e:  # pre-processing only improves placement; the model still works
        log.warning("quantisation pre-processing skipped (%s: %s)", type(e).__name__, e)
    graph = onnx.load(str(source), load_external_data=False).graph
    quantize_static(
        str(source),
        str(int8_path),
        _calibration_reader(calibration, input_name),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
        nodes_to_exclude=sorted(
            _float_nodes(graph, quantize_scope)
            | {n.name for n in graph.node if any(k in n.name for k in keep_float)}
        ),
    )
    prepared.unlink(missing_ok=True)


def _calibration_reader(batches: Iterable[np.ndarray], input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def _float_nodes(graph: Any, quantize_scope: str | None) -> set[str]:
    """The nodes that stay float: the stem, and everything outside `quantize_scope`."""
    exclude = set(stem_nodes(graph))
    if quantize_scope is not None:
        outside = {n.name for n in graph.node if quantize_scope not in n.name}
        if len(outside) < len(graph.node):
            exclude |= outside
        else:  # names without module paths (another exporter): quantise all but the stem
            log.warning("no node name contains %r; quantising the whole graph", quantize_scope)
    return exclude


_COMPUTE_OPS = {"Conv", "MatMul", "Gemm", "GlobalAveragePool", "ReduceMean", "AveragePool",
                "MaxPool"}  # fmt: skip


def stem_nodes(graph: Any, depth: int = 3) -> list[str]:
    """Names of the nodes up to and including the first convolution, and the elementwise nodes
    (normalisation, activation) that follow it before the next compute node."""
    nodes = list(graph.node)  # ONNX graphs are topologically sorted
    first = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), None)
    if first is None:
        return []
    names = [n.name for n in nodes[: first + 1]]
    frontier = set(nodes[first].output)
    for _ in range(depth):
        nxt = [n for n in nodes if frontier & set(n.input) and n.op_type not in _COMPUTE_OPS]
        names += [n.name for n in nxt if n.name not in names]
        frontier = {o for n in nxt for o in n.output}
    return names
