"""The photo model's explain graph: per-tag heatmaps for tags that sum softmax probabilities.

A class tag's map is the class activation map of its ImageNet class (the classifier's row for
the class applied at every position of the trunk's 7 x 7 map: exact, since pooling and the
classifier commute). An ancestor tag's map mixes its classes' maps by their share of its
score (`softmax_mixture_cam`), so `cat` shows where the cat classes that made its score are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from mltag_artifact import Artifact, ExplainGraph, Preprocessing

from ..export.errors import ExportError
from ..export.explain import EXPLAIN_FILE, HEATMAP_TOLERANCE, check_explain_onnx
from ..export.graph import EXPLAIN_NAME, example_input, export_onnx
from ..export.scoring import open_runner
from ..models.heads.common import softmax_mixture_cam

if TYPE_CHECKING:  # builder imports this module
    from .builder import PhotoTagModel


class PhotoExplainModel(nn.Module):
    """uint8 NHWC pixels -> (the photo model's scores (B, N), raw heatmaps (B, N, h, w))."""

    tags: torch.Tensor

    def __init__(self, model: PhotoTagModel) -> None:
        super().__init__()
        self.model = model
        membership = model.membership  # (K, T)
        eye = torch.eye(membership.shape[0], dtype=membership.dtype)
        self.register_buffer("tags", torch.cat([eye, membership.t()]))  # (K + T, K)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        p = self.model.class_probabilities(features)
        scores = torch.cat([p, p @ self.model.membership], dim=1).clamp(0.0, 1.0)
        fc = self.model.classifier
        weight, bias = cast(torch.Tensor, fc.weight), cast(torch.Tensor, fc.bias)
        return scores, softmax_mixture_cam(features, weight, bias, self.tags)


def trace_photo_explain(
    model: PhotoTagModel, prep: Preprocessing, path: Path, num_labels: int, opset: int
) -> ExplainGraph:
    """Trace the explain graph to `path` and check it; its manifest entry (sha256 filled in
    by write_artifact)."""
    graph = PhotoExplainModel(model).eval()
    with torch.no_grad():
        _, maps = graph(example_input(prep, batch=1))
    height, width = int(maps.shape[2]), int(maps.shape[3])
    export_onnx(graph, prep, str(path), num_labels, opset, explain=True)
    check_explain_onnx(path, num_labels, height, width)
    return ExplainGraph(
        file=EXPLAIN_FILE, sha256="0" * 64, output_name=EXPLAIN_NAME, method="cam",
        height=height, width=width,
    )  # fmt: skip


def photo_explain_parity(model: PhotoTagModel, staged: Artifact, batch: np.ndarray) -> float:
    """ONNX Runtime's heatmaps against PyTorch's on `batch`, relative to each map's scale."""
    got_p, got_m = open_runner(staged).run_explain(batch)
    with torch.no_grad():
        want_p, want_m = (
            t.numpy() for t in PhotoExplainModel(model).eval()(torch.from_numpy(batch))
        )
    scale = np.abs(want_m).max(axis=(2, 3), keepdims=True) + 1e-6
    diff = float((np.abs(got_m - want_m) / scale).max())
    p_diff = float(np.abs(got_p - want_p).max())
    if not (diff <= HEATMAP_TOLERANCE and p_diff <= HEATMAP_TOLERANCE):
        raise ExportError(
            f"the photo explain graph disagrees with PyTorch: |Δp| {p_diff:.3g}, "
            f"relative |Δheatmap| {diff:.3g}"
        )
    return diff


__all__: Sequence[str] = ["PhotoExplainModel", "photo_explain_parity", "trace_photo_explain"]
