"""The model repository extension of the Open Inference Protocol (as Triton and KServe speak
it): list the models, load (or reload) one from the repository, unload one. Behind the API key
like every non-probe route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..inference.registry import ModelLoadFailedError, ModelNotFoundError, ModelRegistry
from ..state import ServiceState
from .errors import ApiError

router = APIRouter(prefix="/v2/repository", tags=["kserve-v2 repository"])


def _registry(request: Request) -> ModelRegistry:
    state: ServiceState = request.app.state.mltag
    if state.registry is None or state.draining:
        raise ApiError(503, "not_ready", "the service is loading or shutting down")
    return state.registry


@router.post("/index", summary="Every model known: name, version served, state, reason")
async def index(request: Request) -> JSONResponse:
    rows: list[dict[str, Any]] = _registry(request).index()
    return JSONResponse(rows)


@router.post(
    "/models/{name}/load",
    summary="Load the model's chosen version (highest, or pinned) and swap it in",
)
async def load(name: str, request: Request) -> JSONResponse:
    registry = _registry(request)
    try:
        model = await registry.load(name)
    except ModelNotFoundError as e:
        raise ApiError(404, "model_not_found", str(e)) from None
    except ModelLoadFailedError as e:
        raise ApiError(400, "model_load_failed", str(e)) from None
    return JSONResponse({"name": model.name, "version": model.version})


@router.post("/models/{name}/unload", summary="Stop serving the model (not the default one)")
async def unload(name: str, request: Request) -> JSONResponse:
    registry = _registry(request)
    try:
        await registry.unload(name)
    except ModelNotFoundError as e:
        raise ApiError(404, "model_not_found", str(e)) from None
    except ModelLoadFailedError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    return JSONResponse({})
