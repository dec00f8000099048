"""The artifact manifest: what a model is, what it expects, what it outputs.

Written by the exporter, validated by the service. Needs pydantic and the stdlib only.
Pixel-space conventions: `mean`/`std` are in [0, 1] units (timm's convention); the model's
input is the resized image in `channel_order`, `layout` and `input_dtype`. When
`normalize_in_graph` is true the graph takes raw pixels (0..255) and normalises itself, so a
client only decodes and resizes.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# 1.1 adds the optional label hierarchy (`label_info`), 1.2 the optional explain graph
# (`onnx.explain`); 1.0 and 1.1 manifests still load.
SCHEMA_VERSION = "1.2"
SUPPORTED_SCHEMA_VERSIONS = frozenset({"1.0", "1.1", SCHEMA_VERSION})

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    # Unknown keys are typos more often than extensions: reject them, naming the key.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocessing(_Strict):
    """How an image becomes the model's input tensor."""

    height: int = Field(gt=0, le=8192, description="Input height in pixels.")
    width: int = Field(gt=0, le=8192, description="Input width in pixels.")
    resize: Literal["stretch", "letterbox", "center_crop"] = Field(
        "stretch",
        description="stretch: resize to HxW ignoring aspect; letterbox: fit inside and pad with "
        "`pad_value`; center_crop: resize the shorter side then crop the centre.",
    )
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = (
        "bilinear"
    )
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    input_dtype: Literal["uint8", "float32"] = "float32"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    normalize_in_graph: bool = Field(
        False,
        description="True: the graph takes raw 0..255 pixels and applies mean/std itself.",
    )
    pad_value: tuple[int, int, int] = (0, 0, 0)
    alpha_background: tuple[int, int, int] = Field(
        (255, 255, 255), description="Colour that transparent pixels are composited onto."
    )

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"every std must be > 0, got {list(v)}")
        return v

    @field_validator("pad_value", "alpha_background")
    @classmethod
    def _pad_in_range(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= p <= 255 for p in v):
            raise ValueError(f"entries must be in 0..255, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _uint8_needs_graph_norm(self) -> Preprocessing:
        if self.input_dtype == "uint8" and not self.normalize_in_graph:
            raise ValueError("input_dtype 'uint8' requires normalize_in_graph=true")
        return self


def _check_sha256(v: str) -> str:
    if not _SHA256.match(v):
        raise ValueError("must be 64 lower-case hex characters")
    return v


def _check_relative(v: str) -> str:
    if v.startswith(("/", "\\")) or ".." in v.replace("\\", "/").split("/"):
        raise ValueError(f"must be a file name inside the artifact directory, got {v!r}")
    return v


class ExplainGraph(_Strict):
    """Per-label spatial evidence (schema 1.2): a second ONNX graph with the model's input,
    which outputs the model's probabilities (`onnx.output_name`) and `output_name`. It is a
    file of its own because ONNX Runtime runs every node of a graph whatever outputs are
    fetched: the served `onnx.file` stays exactly as fast without it."""

    file: str = Field("explain.onnx", description="ONNX file name, relative to the artifact dir.")
    sha256: str = Field(description="Lower-case hex sha256 of the file.")
    output_name: str = Field(
        "heatmaps",
        min_length=1,
        description="(B, C, height, width) float32: label c's evidence over the feature map, "
        "rows from the top of the model's input to the bottom, columns left to right. Raw, "
        "not normalised: see `method`. Shown as max(x, 0) / its maximum per label (all "
        "zeros when nothing is positive).",
    )
    method: Literal["attention", "cam"] = Field(
        description="attention: the label's query's cross-attention weights (ML-Decoder; "
        "non-negative, summing to 1 over the map); cam: the class activation map, the head's "
        "weights for the label applied at each position of the final feature map (its mean "
        "over the map is the head's output before the bias)."
    )
    height: int = Field(gt=0, le=4096, description="Rows of the map (the feature map's).")
    width: int = Field(gt=0, le=4096, description="Columns of the map.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _check_sha256(v)

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _check_relative(v)


class OnnxModel(_Strict):
    file: str = Field("model.onnx", description="ONNX file name, relative to the artifact dir.")
    sha256: str = Field(description="Lower-case hex sha256 of the ONNX file.")
    input_name: str = Field(min_length=1)
    output_name: str = Field(min_length=1)
    opset: int = Field(ge=7)
    explain: ExplainGraph | None = Field(
        None, description="The optional explain graph (schema 1.2); absent: no heatmaps."
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _check_sha256(v)

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _check_relative(v)

    @model_validator(mode="after")
    def _explain_distinct(self) -> OnnxModel:
        if self.explain is not None:
            if self.explain.file == self.file:
                raise ValueError("explain.file must differ from file (a graph of its own)")
            if self.explain.output_name in (self.output_name, self.input_name):
                raise ValueError("explain.output_name must differ from the input and output")
        return self


class Output(_Strict):
    semantics: Literal["probabilities"] = Field(
        "probabilities",
        description="Output (B, C): independent per-label probabilities in [0, 1].",
    )


class Architecture(_Strict):
    backbone: str
    head: str
    loss: str
    num_params: int | None = Field(None, ge=0)
    gmacs: float | None = Field(None, ge=0)
    details: dict[str, Any] = Field(default_factory=dict)


class Evaluation(_Strict):
    """Metrics measured on one data split, with what was measured."""

    dataset: str
    split: str
    num_images: int = Field(ge=0)
    metrics: dict[str, float] = Field(description="e.g. mAP, CF1, OF1 (percent or fraction).")
    notes: str = ""


class LabelInfo(_Strict):
    """What is known about one label beyond its name (schema 1.1; all optional)."""

    parents: list[str] = Field(
        default_factory=list,
        description="More general labels of the same model (a cat's parents: feline, animal).",
    )
    aliases: list[str] = Field(default_factory=list, description="Other names for the label.")
    category: str | None = Field(None, description="A coarse group, e.g. 'animals', 'styles'.")


class Manifest(_Strict):
    """`manifest.json` of an mltag artifact."""

    schema_version: str = SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    description: str = ""
    labels: list[str] = Field(min_length=1, description="Label names in model output order.")
    thresholds: list[Probability] = Field(
        description="Per-label decision thresholds (calibrated), same order as labels."
    )
    label_info: list[LabelInfo] | None = Field(
        None, description="Per label, in output order: parents, aliases, category (schema 1.1)."
    )
    default_threshold: Probability = 0.5
    preprocessing: Preprocessing
    onnx: OnnxModel
    output: Output = Field(default_factory=Output)
    architecture: Architecture
    evaluation: list[Evaluation] = Field(default_factory=list)
    model_card: str | None = "MODEL_CARD.md"

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        if v not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(
                f"unsupported schema version {v!r}; this build reads "
                f"{sorted(SUPPORTED_SCHEMA_VERSIONS)}"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels_clean(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, label in enumerate(v):
            if not label or label != label.strip():
                raise ValueError(f"label {i} ({label!r}) is empty or has surrounding spaces")
            if label in seen:
                raise ValueError(f"duplicate label {label!r}")
            seen.add(label)
        return v

    @model_validator(mode="after")
    def _thresholds_match_labels(self) -> Manifest:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(
                f"thresholds has {len(self.thresholds)} entries but labels has "
                f"{len(self.labels)}; they must match one to one"
            )
        return self

    @model_validator(mode="after")
    def _hierarchy_consistent(self) -> Manifest:
        if self.label_info is None:
            return self
        if len(self.label_info) != len(self.labels):
            raise ValueError(
                f"label_info has {len(self.label_info)} entries but labels has "
                f"{len(self.labels)}; they must match one to one"
            )
        known = set(self.labels)
        for label, info in zip(self.labels, self.label_info, strict=True):
            unknown = [p for p in info.parents if p not in known]
            if unknown:
                raise ValueError(f"label {label!r}: parents {unknown} are not labels of the model")
            if label in info.parents:
                raise ValueError(f"label {label!r} is its own parent")
        return self

    @property
    def threshold_by_label(self) -> dict[str, float]:
        return dict(zip(self.labels, self.thresholds, strict=True))
