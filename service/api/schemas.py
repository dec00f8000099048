"""Request and response bodies of the public API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Score = float


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema with its local $defs inlined (they would not resolve inside OpenAPI)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_image.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str | None = None


Threshold = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
ExplainFormat = Literal["json", "png"]
_EXPLAIN = (
    "Add each returned tag's heatmap: where in the image the tag's evidence lies (models "
    "exported with an explain graph; others answer 422 no_heatmap_output)."
)
_EXPLAIN_FORMAT = (
    "json: `heatmap`, a grid of [0, 1] floats at the feature map's resolution (rows top to "
    "bottom, max 1); png: `heatmap_png`, a base64 PNG of the map over the image."
)


class TagOptions(BaseModel):
    """Options of POST /tag, from the query string or the JSON body. Strict: `true` is not 1
    and "0.3" is not 0.3."""

    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int | None = Field(None, ge=1, le=10_000, description="Return at most k tags.")
    min_score: float | None = Field(
        None, ge=0.0, le=1.0, description="One threshold for every label (overrides calibration)."
    )
    thresholds: dict[str, Threshold] | None = Field(
        None, description='Per-label threshold overrides, e.g. {"dog": 0.3}.'
    )
    all_scores: bool = Field(False, description="Also return every label's score.")
    timeout_ms: float | None = Field(
        None, gt=0, description="Shorten the server's deadline for this request."
    )
    include_parents: bool = Field(
        False, description="Add each tag's ancestors (score: their best descendant's)."
    )
    include_labels: list[str] | None = Field(None, description="Return only these labels.")
    exclude_labels: list[str] | None = Field(None, description="Never return these labels.")
    categories: list[str] | None = Field(None, description="Only labels of these categories.")
    explain: bool = Field(False, description=_EXPLAIN)
    explain_format: ExplainFormat = Field("json", description=_EXPLAIN_FORMAT)


class TagQuery(BaseModel):
    """POST /tag's query string. Lax, unlike TagOptions: every query value arrives as text."""

    model_config = ConfigDict(extra="ignore")

    top_k: int | None = Field(None, ge=1, le=10_000, description="At most k tags per image.")
    min_score: float | None = Field(
        None, ge=0, le=1, description="One threshold for all labels (overrides calibration)."
    )
    thresholds: str | None = Field(
        None, description='Per-label threshold overrides as JSON, e.g. {"dog": 0.3}.'
    )
    all_scores: bool = Field(False, description="Also return every label's score.")
    timeout_ms: float | None = Field(None, gt=0, description="Shorten the server deadline.")
    model: str | None = Field(None, description="The model to use (default: the default model).")
    version: str | None = Field(None, description="Must be the version serving `model`.")
    include_parents: bool = Field(
        False, description="Add each tag's ancestors (score: their best descendant's)."
    )
    include_labels: str | None = Field(None, description="Only these labels, comma-separated.")
    exclude_labels: str | None = Field(None, description="Never these labels, comma-separated.")
    categories: str | None = Field(None, description="Only these categories, comma-separated.")
    explain: bool = Field(False, description=_EXPLAIN)
    explain_format: ExplainFormat = Field("json", description=_EXPLAIN_FORMAT)


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    b64: str = Field(description="The image file, base64-encoded (standard alphabet).")
    filename: str | None = None


class TagJsonRequest(TagOptions):
    images: list[ImageIn] = Field(min_length=1)


class Tag(BaseModel):
    label: str
    score: Score
    parents: list[str] | None = Field(
        None, description="More general labels (only from models with a hierarchy)."
    )
    heatmap: list[list[float]] | None = Field(
        None,
        description="With explain=true: the tag's evidence over the image, a grid at the "
        "feature map's resolution (rows from the top of the image as the service oriented "
        "it, after EXIF rotation; columns left to right), in [0, 1], max 1 per tag.",
    )
    heatmap_png: str | None = Field(
        None,
        description="With explain=true&explain_format=png: the heatmap coloured over the "
        "image, a base64 PNG at the image's size (at most 2048 px on its longer side).",
    )


class ImageResult(BaseModel):
    index: int
    filename: str | None
    tags: list[Tag]
    scores: dict[str, Score] | None = Field(
        None, description="Every label's score, in output order (with all_scores=true)."
    )
    error: ErrorDetail | None = None


class ModelRef(BaseModel):
    name: str
    version: str


class TagResponse(BaseModel):
    model: ModelRef
    results: list[ImageResult]


class LabelEntry(BaseModel):
    index: int
    name: str
    threshold: float
    parents: list[str] | None = Field(None, description="More general labels, when known.")
    aliases: list[str] | None = None
    category: str | None = None


class BatchingInfo(BaseModel):
    workers: int = Field(description="Batches this model runs at once (model threads).")
    max_batch_size: int = Field(description="Most images per model run, as planned at load.")
    ms_per_image: dict[int, float] = Field(
        description="Measured at load: wall-clock ms per image by batch size, with `workers`"
        " runs at a time; empty when batch_tuning is off."
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    description: str
    created_at: str
    architecture: dict[str, Any]
    evaluation: list[dict[str, Any]]
    preprocessing: dict[str, Any]
    execution_provider: str
    heatmaps: dict[str, Any] | None = Field(
        None,
        description="The explain graph (method, height, width) when the model has one: "
        "POST /tag?explain=true works; absent otherwise.",
    )
    batching: BatchingInfo


class LabelsResponse(BaseModel):
    model: ModelInfo
    default_threshold: float
    labels: list[LabelEntry]


# ---- Open Inference Protocol (KServe v2) request, for the OpenAPI document ----------------
# The route parses the body by hand (JSON or JSON + binary tensors, checked against the model);
# these models describe it so clients and schema-driven tools see the real shape.


class InferTensor(BaseModel):
    name: str = Field(description="The model's input name (GET /v2/models/{name}).")
    shape: list[int] = Field(description="[batch, *sample shape], e.g. [1, 224, 224, 3].")
    datatype: str = Field(description="UINT8 or FP32, as the model's metadata says.")
    data: list[Any] | None = Field(
        None, description="Row-major values (flat or nested); omit with binary_data_size."
    )
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": N}: the tensor follows the JSON as raw bytes.'
    )


class InferOutputRequest(BaseModel):
    name: str = Field(
        description="probabilities, or heatmaps (B, C, h, w; raw, models with an explain "
        "graph: computed only when named here)."
    )
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": true}')


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[InferOutputRequest] | None = None
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_output": true} for a binary response.'
    )
