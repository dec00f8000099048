"""A tiny, real, hand-weighted ONNX colour tagger, built without torch.

It serves two purposes: the model `make run` serves until a trained default model is bundled,
and the real ONNX model behind the service's integration tests. It is not a trained network:
it averages the image's colour and applies fixed linear rules (documented per label below),
so its answers are predictable ("a red image is tagged red") and testable.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mltag_artifact import (
    Architecture,
    Artifact,
    ExplainGraph,
    Manifest,
    OnnxModel,
    Preprocessing,
)
from mltag_artifact import write_artifact as _write_artifact

# label -> (weights on mean [r, g, b] in [0, 1], bias). logit = 12 * (w . rgb + b).
COLOUR_RULES: dict[str, tuple[tuple[float, float, float], float]] = {
    "red": ((1.0, -1.0, -0.5), -0.25),  # red clearly above green and blue
    "green": ((-1.0, 1.0, -0.5), -0.25),
    "blue": ((-0.5, -0.5, 1.0), -0.25),
    "yellow": ((0.5, 0.5, -1.0), -0.6),  # red and green both high, little blue
    "bright": ((1 / 3, 1 / 3, 1 / 3), -0.7),  # mean intensity above 0.7
    "dark": ((-1 / 3, -1 / 3, -1 / 3), 0.3),  # mean intensity below 0.3
}
SHARPNESS = 12.0
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OPSET = 17


HEATMAP_NAME = "heatmaps"
HEATMAP_GRID = 8  # the explain graph's map: the image averaged over an 8 x 8 grid


def build_colour_model(
    path: Path,
    size: int = 64,
    layout: Literal["NHWC", "NCHW"] = "NHWC",
    input_dtype: Literal["uint8", "float32"] = "uint8",
    explain: bool = False,
) -> None:
    """Write the ONNX graph: raw 0..255 pixels -> mean colour -> sigmoid(linear rules).

    With `explain`, the explain graph instead (manifest `onnx.explain`): the same
    probabilities, and each label's class activation map over an 8 x 8 grid of the image,
    the rules' weights applied to each cell's mean colour (times the sharpness, so its mean
    over the grid is the logit less the bias): exact, since the model is a pooled linear
    layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([rule[0] for rule in COLOUR_RULES.values()], dtype=np.float32).T  # (3, C)
    b = np.array([rule[1] for rule in COLOUR_RULES.values()], dtype=np.float32)  # (C,)
    n = len(COLOUR_RULES)
    spatial_axes = [1, 2] if layout == "NHWC" else [2, 3]
    in_shape: list[str | int] = (
        ["batch", size, size, 3] if layout == "NHWC" else ["batch", 3, size, size]
    )
    elem = TensorProto.UINT8 if input_dtype == "uint8" else TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean255"], axes=spatial_axes, keepdims=0),
        helper.make_node("Div", ["mean255", "c255"], ["rgb"]),  # (B, 3) in [0, 1]
        helper.make_node("MatMul", ["rgb", "W"], ["lin"]),  # (B, C)
        helper.make_node("Add", ["lin", "b"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "k"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
    ]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n])]
    if explain:
        nodes += _cam_nodes(size, layout)
        grid: list[str | int] = ["batch", n, HEATMAP_GRID, HEATMAP_GRID]
        outputs.append(helper.make_tensor_value_info(HEATMAP_NAME, TensorProto.FLOAT, grid))
    graph = helper.make_graph(
        nodes,
        "mltag_colour_demo",
        [helper.make_tensor_value_info(INPUT_NAME, elem, in_shape)],
        outputs,
        initializer=[
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "c255"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(SHARPNESS, dtype=np.float32), "k"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mltag"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _cam_nodes(size: int, layout: Literal["NHWC", "NCHW"]) -> list[Any]:
    """x (0..255) -> the rules' class activation maps (B, C, 8, 8)."""
    from onnx import helper

    cell = size // HEATMAP_GRID
    nodes = []
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    source = "x_nchw" if layout == "NHWC" else "x"
    return [
        *nodes,
        helper.make_node(
            "AveragePool", [source], ["cells255"], kernel_shape=[cell, cell], strides=[cell, cell]
        ),  # (B, 3, 8, 8)
        helper.make_node("Div", ["cells255", "c255"], ["cells"]),
        helper.make_node("Einsum", ["cells", "W"], ["cam"], equation="bkhw,kc->bchw"),
        helper.make_node("Mul", ["cam", "k"], [HEATMAP_NAME]),  # (B, C, 8, 8)
    ]


MODEL_CARD = """# mltag colour demo

A hand-weighted ONNX model built by `mltag-train demo-artifact` without training data. It
averages the image's colour and tags: red, green, blue, yellow, bright, dark.

- Intended use: trying the service end to end; the service's integration tests.
- Not for: anything else. It sees only the mean colour of the whole image.
"""


def write_demo_artifact(
    directory: str | Path,
    size: int = 64,
    layout: Literal["NHWC", "NCHW"] = "NHWC",
    input_dtype: Literal["uint8", "float32"] = "uint8",
    name: str = "colour-demo",
    version: str = "1.0.0",
    explain: bool = True,
) -> Artifact:
    """Build the colour model and write a complete, valid artifact directory; with
    `explain`, also its explain graph (per-label heatmaps, manifest `onnx.explain`)."""
    labels = list(COLOUR_RULES)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        build_colour_model(onnx_path, size=size, layout=layout, input_dtype=input_dtype)
        explain_path = Path(tmp) / "explain.onnx" if explain else None
        if explain_path is not None:
            build_colour_model(explain_path, size, layout, input_dtype, explain=True)
        manifest = Manifest(
            name=name,
            version=version,
            description="Hand-weighted mean-colour tagger (demo; not trained).",
            labels=labels,
            thresholds=[0.5] * len(labels),
            default_threshold=0.5,
            preprocessing=Preprocessing(
                height=size,
                width=size,
                resize="stretch",
                interpolation="bilinear",
                channel_order="RGB",
                layout=layout,
                input_dtype=input_dtype,
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                normalize_in_graph=True,
            ),
            onnx=OnnxModel(
                file="model.onnx",
                sha256="0" * 64,  # replaced by write_artifact
                input_name=INPUT_NAME,
                output_name=OUTPUT_NAME,
                opset=OPSET,
                explain=_explain_spec() if explain else None,
            ),
            architecture=Architecture(
                backbone="mean_colour", head="fixed_linear", loss="none", num_params=24
            ),
        )
        return _write_artifact(
            directory, manifest, onnx_path, model_card=MODEL_CARD, explain_file=explain_path
        )


def _explain_spec() -> ExplainGraph:
    return ExplainGraph(
        file="explain.onnx",
        sha256="0" * 64,  # replaced by write_artifact
        output_name=HEATMAP_NAME,
        method="cam",
        height=HEATMAP_GRID,
        width=HEATMAP_GRID,
    )
