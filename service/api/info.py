"""Health, labels and metrics endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mltag_artifact import ExplainGraph, LabelInfo

from ..inference.registry import ModelNotFoundError
from .errors import ApiError
from .pipeline import StateDep
from .schemas import BatchingInfo, LabelEntry, LabelsResponse, ModelInfo

router = APIRouter()


@router.head("/livez", include_in_schema=False)
@router.get("/livez", tags=["health"], summary="The process is up (does not look at the model)")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz", tags=["health"], summary="Model loaded and warmed, and not draining (else 503)"
)
async def readyz(state: StateDep) -> JSONResponse:
    if state.ready and not state.draining:
        return JSONResponse({"status": "ready"})
    status = "draining" if state.draining else "loading"
    return JSONResponse({"status": status}, status_code=503)


@router.get(
    "/labels",
    response_model=LabelsResponse,
    response_model_exclude_none=True,  # hierarchy fields only where the model has them
    tags=["model"],
    summary="Labels in output order with calibrated thresholds, and model metadata",
)
async def labels(
    state: StateDep, model: str | None = None, version: str | None = None
) -> LabelsResponse:
    """`?model=NAME` (and `&version=V`) for another than the default model."""
    if state.registry is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    try:
        served = state.registry.resolve(model, version)
    except ModelNotFoundError as e:
        raise ApiError(404, "model_not_found", str(e)) from None
    tagger = served.tagger
    m = tagger.manifest
    info: list[LabelInfo | None] = [*m.label_info] if m.label_info else [None] * len(m.labels)
    return LabelsResponse(
        model=ModelInfo(
            name=served.name,
            version=served.version,
            description=m.description,
            created_at=m.created_at.isoformat(),
            architecture=m.architecture.model_dump(),
            evaluation=[e.model_dump() for e in m.evaluation],
            preprocessing=m.preprocessing.model_dump(),
            execution_provider=tagger.runner.provider,
            heatmaps=_heatmaps(m.onnx.explain) if served.explain_batcher is not None else None,
            batching=BatchingInfo(
                workers=served.plan.workers,
                max_batch_size=served.plan.max_batch_size,
                ms_per_image={b: round(ms, 3) for b, ms in served.plan.ms_per_image.items()},
            ),
        ),
        default_threshold=m.default_threshold,
        labels=[
            LabelEntry(
                index=i,
                name=name,
                threshold=t,
                parents=extra.parents if extra else None,
                aliases=extra.aliases if extra else None,
                category=extra.category if extra else None,
            )
            for i, (name, t, extra) in enumerate(zip(m.labels, m.thresholds, info, strict=True))
        ],
    )


def _heatmaps(spec: ExplainGraph | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {"method": spec.method, "height": spec.height, "width": spec.width,
            "output_name": spec.output_name}  # fmt: skip


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,  # documents the text exposition format, not JSON
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
