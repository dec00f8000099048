"""Health, labels and metrics endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import ApiError
from .pipeline import StateDep
from .schemas import LabelEntry, LabelsResponse, ModelInfo

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
    tags=["model"],
    summary="Labels in output order with calibrated thresholds, and model metadata",
)
async def labels(state: StateDep) -> LabelsResponse:
    if state.model is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    tagger = state.model.tagger
    m = tagger.manifest
    return LabelsResponse(
        model=ModelInfo(
            name=m.name,
            version=m.version,
            description=m.description,
            created_at=m.created_at.isoformat(),
            architecture=m.architecture.model_dump(),
            evaluation=[e.model_dump() for e in m.evaluation],
            preprocessing=m.preprocessing.model_dump(),
            execution_provider=tagger.runner.provider,
        ),
        default_threshold=m.default_threshold,
        labels=[
            LabelEntry(index=i, name=name, threshold=t)
            for i, (name, t) in enumerate(zip(m.labels, m.thresholds, strict=True))
        ],
    )


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,  # documents the text exposition format, not JSON
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def metrics(state: StateDep) -> Response:
    state.metrics.queue_depth.set(state.model.batcher.queue_depth if state.model else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
