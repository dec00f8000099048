"""The modules that get traced: input adapter (uint8 NHWC or float32 NCHW) -> classifier ->
probabilities (`ExportGraph`, model.onnx), or probabilities and per-label heatmaps
(`ExplainExportGraph`, explain.onnx), with the GCN head's image-independent attention frozen
to a constant.

Score semantics (docs/method.md#scores-at-inference): the graph ends in σ(s·cos) for cosine
heads and σ(logit) otherwise, through `MultilabelClassifier.scores`, so the scale is inside the
graph.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
from torch import nn

from mltag_artifact import Preprocessing

from ..models import MultilabelClassifier, ProbabilityModel
from ..models.heads import GCNHead
from ..models.heads.common import class_activation_map

InputFormat = Literal["uint8-nhwc", "float32-nchw"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("uint8-nhwc", "float32-nchw")
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
EXPLAIN_NAME = "heatmaps"


class ConstantAttentionGCNHead(nn.Module):
    """A trained `GCNHead` with a = σ(max_c G[c, :]) evaluated once and stored as a buffer.

    Built from the head *after* its trained weights are loaded (the reference exporter froze
    the attention of the randomly initialised graph layers). At inference the head is then
    GAP(F) ⊙ a followed by its (cosine) linear layer: the graph layers, label embeddings and
    adjacency are not in the exported model at all.
    """

    attention: torch.Tensor
    explain_method = "cam"

    def __init__(self, head: GCNHead) -> None:
        super().__init__()
        with torch.no_grad():
            attention = head.channel_attention().detach().float().clone()  # (D,)
        self.register_buffer("attention", attention)
        self.fc = head.fc
        self.cosine = head.cosine

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3)) * self.attention.to(features.dtype)  # (B, D)
        return self.fc(pooled)  # (B, C)

    def explain(self, features: torch.Tensor) -> torch.Tensor:
        return class_activation_map(self.fc, features, self.attention)  # (B, C, H, W)


def freeze_for_export(classifier: MultilabelClassifier) -> MultilabelClassifier:
    """An eval-mode copy with every image-independent computation turned into constants."""
    frozen = copy.deepcopy(classifier).cpu().float().eval()
    if isinstance(frozen.head, GCNHead):
        frozen.head = ConstantAttentionGCNHead(frozen.head)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


class ExportGraph(nn.Module):
    """Model input as the manifest describes it -> per-label probabilities (B, C) in [0, 1].

    With `normalize_in_graph` the input is raw 0..255 pixels (uint8) and (x/255 − mean)/std is
    one multiply-add inside the graph: the client only decodes and resizes.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(
        self, classifier: MultilabelClassifier, prep: Preprocessing, freeze: bool = True
    ) -> None:
        super().__init__()
        # freeze=False keeps image-independent work (the GCN branch) in the graph: only for
        # measuring what freezing saves.
        inner = freeze_for_export(classifier) if freeze else copy.deepcopy(classifier).eval()
        self.model = ProbabilityModel(inner)
        self.nhwc = prep.layout == "NHWC"
        self.normalize = prep.normalize_in_graph
        mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)
        self.eval()

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's input -> the classifier's (B, 3, H, W) normalised float input."""
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if self.normalize:
            x = x.float() * self.scale - self.shift
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.adapt(x))  # (B, C)


class ExplainExportGraph(ExportGraph):
    """The same input -> (probabilities (B, C), raw heatmaps (B, C, h, w)): the explain graph,
    a file of its own (manifest `onnx.explain`), so model.onnx never computes the maps."""

    @property
    def method(self) -> str:
        return str(self.model.classifier.head.explain_method)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.model.classifier.explain(self.adapt(x))


def preprocessing_for_input(base: Preprocessing, input_format: InputFormat) -> Preprocessing:
    """The run's preprocessing with the input format the exported graph takes."""
    if input_format == "uint8-nhwc":
        update = {"layout": "NHWC", "input_dtype": "uint8", "normalize_in_graph": True}
    elif input_format == "float32-nchw":
        update = {"layout": "NCHW", "input_dtype": "float32", "normalize_in_graph": False}
    else:
        raise ValueError(f"unknown input format {input_format!r}; valid: {INPUT_FORMATS}")
    return Preprocessing.model_validate({**base.model_dump(), **update})


def example_input(prep: Preprocessing, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random batch in the graph's input format (batch 2: no batch-1 specialisation)."""
    g = torch.Generator().manual_seed(seed)
    if prep.layout == "NHWC":
        shape: tuple[int, ...] = (batch, prep.height, prep.width, 3)
    else:
        shape = (batch, 3, prep.height, prep.width)
    if prep.input_dtype == "uint8":
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    return torch.randn(shape, generator=g)


def export_onnx(
    graph: nn.Module,
    prep: Preprocessing,
    path: str,
    num_labels: int,
    opset: int = 17,
    explain: bool | None = None,
) -> None:
    """Trace with the TorchScript-based exporter: dynamic batch, fixed spatial size, outputs
    declared (batch, num_labels, ...); an explain graph (an `ExplainExportGraph`, or any module
    with `explain=True` returning (probabilities, heatmaps)) gets its two outputs."""
    import onnx

    if explain is None:
        explain = isinstance(graph, ExplainExportGraph)
    outputs = [OUTPUT_NAME, EXPLAIN_NAME] if explain else [OUTPUT_NAME]
    with warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks (e.g. timm's asserts) are expected.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph,
            (example_input(prep),),
            path,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            do_constant_folding=True,
            dynamo=False,
        )
    # Some heads (ML-Decoder's group FC cut to C) leave the label axis symbolic after tracing;
    # it is C by construction (verified on real images after export), and the service checks
    # the label count against a fixed size, so declare it.
    model = onnx.load(path)
    changed = False
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) >= 2 and not dims[1].dim_value:
            dims[1].dim_value = num_labels
            changed = True
    if changed:
        onnx.save(model, path)


def count_gmacs(graph: ExportGraph, prep: Preprocessing) -> float | None:
    """Multiply-accumulates per image (GMAC) of the exported computation, from torch's FLOP
    counter (convolutions, matmuls, attention); None when it cannot count this model."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            graph(example_input(prep, batch=1))
        return float(counter.get_total_flops()) / 2e9
    except Exception:  # a counting aid, never a reason to fail an export
        return None
