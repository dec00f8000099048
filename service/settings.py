"""Service settings: `MLTAG_*` environment variables, overridden by `mltag-serve` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mltag_artifact.preprocess import UNTRUSTED_LIMITS

Provider = Literal["auto", "cpu", "cuda", "tensorrt"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLTAG_", extra="ignore", frozen=True)

    # Model
    artifact_dir: Path = Field(Path("models/default"), description="Artifact directory to serve.")
    model_repository: Path | None = Field(
        None,
        description="Serve every model of this repository (DIR/<model>/<version>/, versions"
        " positive integers) instead of artifact_dir.",
    )
    repository_poll_s: float = Field(
        0.0,
        ge=0,
        description="Look for new versions in the repository this often; 0 = only when asked"
        " (POST /v2/repository/models/{name}/load).",
    )
    default_model: str | None = Field(
        None,
        description="The model /tag uses without ?model=; unset: the only one, or the first"
        " by name.",
    )
    model_versions: dict[str, int] = Field(
        default_factory=dict,
        description='Pinned versions, e.g. {"photo": 2}; a model not listed serves its highest.',
    )
    provider: Provider = Field(
        "auto", description="ONNX Runtime execution provider; auto = best available, else CPU."
    )
    require_gpu: bool = Field(False, description="Refuse to start unless a GPU provider is used.")
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads (0 = one per core)."
    )
    warmup_runs: int = Field(2, ge=0, description="Warm-up inferences before ready.")

    # HTTP
    host: str = Field("127.0.0.1", description="Bind address (0.0.0.0 in containers).")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    api_key: str | None = Field(
        None, description="If set, required as X-API-Key (or Bearer) except on health/metrics."
    )
    docs_public: bool = Field(
        False,
        description="Serve /docs, /redoc and /openapi.json without the API key (when one is"
        " set); by default they need it like every other non-probe route.",
    )
    ui: bool = Field(
        True,
        description="Serve the browser page at / (try the model, tune thresholds, see"
        " heatmaps); false: / answers 404.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )

    # HTTP limits (before a request reaches the app)
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Request line + headers, in bytes; more -> 431."
    )
    max_header_line_bytes: int = Field(
        8 * 1024, ge=256, description="The request line or one header, in bytes; more -> 431."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time for a request's headers to arrive; slower -> 408, closed."
    )
    max_connections: int = Field(
        2048, ge=1, description="Open connections; a new one beyond it gets 503 and is closed."
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )

    # Batching
    max_batch_size: int = Field(16, ge=1, le=1024, description="Most images per model run.")
    batch_tuning: bool = Field(
        True,
        description="At load, time the model at batch sizes 1, 2, 4, ... up to max_batch_size"
        " and cap batches at the fastest per image (on a CPU large batches can cost more per"
        " image); false: batches of up to max_batch_size.",
    )
    model_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Batches running at once (model threads) per model; 0 = one per core on a"
        " CPU, one on a GPU.",
    )
    max_delay_ms: float = Field(
        0.0, ge=0, description="Wait this long for a fuller batch; 0 = never wait when idle."
    )
    wait_for_decoding: bool = Field(
        False,
        description="With max_delay_ms 0, an idle model waits (up to one model run) for images"
        " being decoded instead of running small batches (see benchmarks/RESULTS.md).",
    )
    max_queue_size: int = Field(256, ge=1, description="Images waiting; beyond it -> 429.")
    request_timeout_s: float = Field(
        30.0, gt=0, description="Server deadline for a request; a client may only shorten it."
    )
    decode_threads: int = Field(0, ge=0, description="Image decode threads (0 = auto).")
    model_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="Lower the model's threads' CPU priority by this much (Linux), so"
        " inference never starves the event loop (HTTP, 429s, health probes); 0 = same.",
    )
    decode_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="Lower decode threads' CPU priority by this much (Linux). Equal to"
        " model_nice, decoding and inference share the cores, so decoded images pile up"
        " into batches; well above it, decoding only fills the model's idle time and"
        " decode-bound input (large photos) runs at batch ~1.",
    )

    malloc_tuning: bool = Field(
        True,
        description="glibc: keep per-request buffers in the heap instead of a fresh mmap (and"
        " page faults) per image; costs up to 128 MB of retained free memory.",
    )

    # Uploads
    min_upload_bytes_per_s: float = Field(
        4096,
        ge=0,
        description="A request body must arrive at least this fast on average (after"
        " upload_grace_s), or the request ends with 408; 0 = no minimum.",
    )
    upload_grace_s: float = Field(
        2.0, ge=0, description="Time a body may take before its minimum rate applies."
    )
    max_upload_mb_in_flight: int = Field(
        256,
        gt=0,
        description="Request bodies received and held, all requests together; beyond it new"
        " requests with a body get 429 uploads_full.",
    )

    # Request limits
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Larger bodies -> 413.")
    max_images_per_request: int = Field(16, ge=1, description="More images in one request -> 422.")
    max_image_pixels: int = Field(
        UNTRUSTED_LIMITS.max_pixels,
        gt=0,
        description="Decoded pixel limit (decompression bombs) -> 413.",
    )
    max_image_side: int = Field(
        UNTRUSTED_LIMITS.max_side,
        gt=0,
        description="Longest side in pixels; longer -> 413 (from the header).",
    )
    max_aspect_ratio: float = Field(
        UNTRUSTED_LIMITS.max_aspect_ratio,
        ge=1,
        description="Longer side / shorter side; more -> 422 (from the header).",
    )
    decode_memory_mb: int = Field(
        1024,
        gt=0,
        description="Memory all image decodes in flight may hold together (estimated from each"
        " header before decoding); decodes wait for room, an image that alone needs more -> 413.",
    )

    # Shutdown
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long to finish accepted requests."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.require_gpu and self.provider == "cpu":
            raise ValueError("require_gpu is set but provider is 'cpu'")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; unset it to disable authentication")
        biggest = max(self.max_images_per_request, self.max_batch_size)
        if self.max_queue_size < biggest:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be at least max_images_per_request"
                f" and max_batch_size ({biggest}), or such requests could never be admitted"
            )
        return self
