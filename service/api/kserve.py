"""The Open Inference Protocol (KServe v2) subset, so Triton/KServe clients work unchanged.

Supports JSON tensors and the binary tensor extension (`Inference-Header-Content-Length`,
`binary_data_size`, `binary_data`/`binary_data_output`) that `tritonclient` uses by default.
Inference goes through the same batcher as /tag; the input is the preprocessed tensor.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from .. import __version__
from ..state import ServiceState
from .common import ReadyStateDep, StateDep, admitted, infer_samples, request_deadline
from .errors import ApiError

router = APIRouter(prefix="/v2", tags=["kserve-v2"])

_DATATYPES = {"uint8": "UINT8", "float32": "FP32"}
_HEADER_LENGTH = "Inference-Header-Content-Length"


def _check_model(state: ServiceState, name: str, version: str | None = None) -> None:
    assert state.artifact is not None
    m = state.artifact.manifest
    if name != m.name:
        raise ApiError(
            404, "model_not_found", f"unknown model {name!r}; this server serves {m.name!r}"
        )
    if version is not None and version != m.version:
        raise ApiError(
            404,
            "model_not_found",
            f"unknown version {version!r} of {name!r}; serving {m.version!r}",
        )


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "mltag", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Server live")
async def health_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Server ready (503 while loading or draining)")
async def health_ready(state: StateDep) -> JSONResponse:
    ready = state.ready and not state.draining
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def _metadata(state: ServiceState) -> dict[str, Any]:
    assert state.artifact is not None
    assert state.runner is not None
    m = state.artifact.manifest
    return {
        "name": m.name,
        "versions": [m.version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": m.onnx.input_name,
                "datatype": _DATATYPES[m.preprocessing.input_dtype],
                "shape": [-1, *state.runner.sample_shape],
            }
        ],
        "outputs": [{"name": m.onnx.output_name, "datatype": "FP32", "shape": [-1, len(m.labels)]}],
        "parameters": {"labels": m.labels},
    }


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, state: ReadyStateDep) -> dict[str, Any]:
    _check_model(state, name)
    return _metadata(state)


@router.get("/models/{name}/versions/{version}", summary="Model metadata (versioned)")
async def model_metadata_version(name: str, version: str, state: ReadyStateDep) -> dict[str, Any]:
    _check_model(state, name, version)
    return _metadata(state)


@router.get("/models/{name}/ready", summary="Model ready (503 while loading or draining)")
async def model_ready(name: str, state: StateDep) -> JSONResponse:
    if state.artifact is not None:
        _check_model(state, name)
    ready = state.ready and not state.draining
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


def _split_body(request: Request, body: bytes) -> tuple[dict[str, Any], bytes]:
    header_len = request.headers.get(_HEADER_LENGTH.lower())
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise ApiError(400, "bad_request", f"{_HEADER_LENGTH} must be an integer") from None
        if not 0 <= n <= len(body):
            raise ApiError(400, "bad_request", f"{_HEADER_LENGTH} {n} exceeds the body size")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"malformed inference request JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_json", "the inference request must be a JSON object")
    return doc, binary


def _input_tensor(state: ServiceState, doc: dict[str, Any], binary: bytes) -> np.ndarray:
    assert state.artifact is not None
    assert state.runner is not None
    m = state.artifact.manifest
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(400, "bad_request", f"expected exactly one input, {m.onnx.input_name!r}")
    spec = inputs[0]
    if spec.get("name") != m.onnx.input_name:
        raise ApiError(
            400,
            "bad_request",
            f"unknown input {spec.get('name')!r}; expected {m.onnx.input_name!r}",
        )
    want_type = _DATATYPES[m.preprocessing.input_dtype]
    if spec.get("datatype") != want_type:
        raise ApiError(
            400, "bad_request", f"input datatype {spec.get('datatype')!r}; expected {want_type!r}"
        )
    shape = spec.get("shape")
    sample = list(state.runner.sample_shape)
    if (
        not isinstance(shape, list)
        or len(shape) != 1 + len(sample)
        or not all(isinstance(d, int) for d in shape)
        or shape[1:] != sample
        or shape[0] < 1
    ):
        raise ApiError(
            400,
            "bad_request",
            f"input shape {shape}; expected [batch, {', '.join(map(str, sample))}]",
        )
    limit = max(state.settings.max_batch_size, state.settings.max_images_per_request)
    if shape[0] > limit:
        raise ApiError(422, "too_many_images", f"batch of {shape[0]}; the limit is {limit}")
    dtype = state.runner.dtype
    count = int(np.prod(shape))
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    try:
        if size is not None:
            if len(binary) != size:  # one input, so its blob is the whole binary part
                raise ApiError(
                    400, "bad_request", f"binary_data_size {size} but {len(binary)} bytes follow"
                )
            arr = np.frombuffer(binary, dtype=dtype)
        else:
            arr = np.asarray(spec.get("data"), dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ApiError(400, "bad_request", f"input data does not match {want_type}: {e}") from None
    if arr.size != count:
        raise ApiError(
            400, "bad_request", f"input has {arr.size} values; shape {shape} needs {count}"
        )
    return arr.reshape(shape)


def _wants_binary(doc: dict[str, Any], output_name: str) -> bool:
    params = doc.get("parameters") or {}
    default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    for out in doc.get("outputs") or []:
        if isinstance(out, dict) and out.get("name") == output_name:
            p = out.get("parameters") or {}
            return bool(p.get("binary_data", default)) if isinstance(p, dict) else default
    return default


async def _infer(request: Request, state: ServiceState) -> Response:
    assert state.artifact is not None
    m = state.artifact.manifest
    doc, binary = _split_body(request, await request.body())
    outputs = doc.get("outputs") or []
    for requested in outputs:
        if not isinstance(requested, dict) or requested.get("name") != m.onnx.output_name:
            raise ApiError(
                400,
                "bad_request",
                f"unknown output requested; this model has {m.onnx.output_name!r}",
            )
    batch = _input_tensor(state, doc, binary)
    deadline = request_deadline(request, state, None)
    with admitted(state, len(batch)):
        rows = await infer_samples(request, state, list(batch), deadline)
    probs = np.stack(rows).astype(np.float32)
    state.metrics.images.labels("ok").inc(len(rows))
    out: dict[str, Any] = {
        "name": m.onnx.output_name,
        "datatype": "FP32",
        "shape": list(probs.shape),
    }
    result: dict[str, Any] = {"model_name": m.name, "model_version": m.version, "outputs": [out]}
    if "id" in doc:
        result["id"] = doc["id"]
    if _wants_binary(doc, m.onnx.output_name):
        blob = probs.tobytes()
        out["parameters"] = {"binary_data_size": len(blob)}
        head = json.dumps(result).encode()
        return Response(
            head + blob,
            media_type="application/octet-stream",
            headers={_HEADER_LENGTH: str(len(head))},
        )
    out["data"] = probs.reshape(-1).tolist()
    return JSONResponse(result)


@router.post("/models/{name}/infer", summary="Inference on preprocessed tensors")
async def infer(name: str, request: Request, state: ReadyStateDep) -> Response:
    _check_model(state, name)
    return await _infer(request, state)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference (versioned)")
async def infer_version(
    name: str, version: str, request: Request, state: ReadyStateDep
) -> Response:
    _check_model(state, name, version)
    return await _infer(request, state)
