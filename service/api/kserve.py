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
from ..inference.registry import ModelNotFoundError
from ..inference.served_model import ServedModel
from ..state import ServiceState
from .errors import ApiError
from .pipeline import (
    RequestGuard,
    StateDep,
    admitted,
    infer_samples,
    ready_model,
    request_deadline,
)
from .schemas import InferRequest, inline_schema

router = APIRouter(prefix="/v2", tags=["kserve-v2"])

_DATATYPES = {"uint8": "UINT8", "float32": "FP32"}
_HEADER_LENGTH = "Inference-Header-Content-Length"


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


def _metadata(model: ServedModel) -> dict[str, Any]:
    m = model.tagger.manifest
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": m.onnx.input_name,
                "datatype": _DATATYPES[m.preprocessing.input_dtype],
                "shape": [-1, *model.tagger.runner.sample_shape],
            }
        ],
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [-1, *shape]}
            for name, shape in _output_shapes(model).items()
        ],
        "parameters": {"labels": m.labels},
    }


def _output_shapes(model: ServedModel) -> dict[str, list[int]]:
    """The model's outputs and their shapes after the batch axis: the probabilities, and the
    raw heatmaps when the artifact has an explain graph (computed only when requested)."""
    m = model.tagger.manifest
    shapes = {m.onnx.output_name: [len(m.labels)]}
    if m.onnx.explain is not None and model.explain_batcher is not None:
        e = m.onnx.explain
        shapes[e.output_name] = [len(m.labels), e.height, e.width]
    return shapes


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    return _metadata(ready_model(request, name))


@router.get("/models/{name}/versions/{version}", summary="Model metadata (versioned)")
async def model_metadata_version(name: str, version: str, request: Request) -> dict[str, Any]:
    return _metadata(ready_model(request, name, version))


@router.get("/models/{name}/ready", summary="Model ready (503 while loading or draining)")
async def model_ready(name: str, state: StateDep) -> JSONResponse:
    return _model_ready(state, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model ready (versioned)")
async def model_ready_version(name: str, version: str, state: StateDep) -> JSONResponse:
    return _model_ready(state, name, version)


def _model_ready(state: ServiceState, name: str, version: str | None) -> JSONResponse:
    """Per model: 404 when not served (an unknown name, or an unloaded model), else 200 when
    the service is ready, 503 while it loads or drains."""
    if state.registry is not None:
        try:
            state.registry.resolve(name, version)
        except ModelNotFoundError as e:
            raise ApiError(404, "model_not_found", str(e)) from None
    ready = state.ready and not state.draining
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


def _split_body(
    header_len: str | None, body: bytes, max_values: int
) -> tuple[dict[str, Any], bytes]:
    if header_len is not None:
        # ASCII only: str.isdigit() also accepts "²", which int() refuses.
        if not (header_len.isascii() and header_len.isdigit()):
            raise _bad(f"{_HEADER_LENGTH} must be a non-negative integer")
        n = int(header_len)
        if n > len(body):
            raise ApiError(400, "bad_request", f"{_HEADER_LENGTH} {n} exceeds the body size")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    # json.loads holds the GIL (stalling the event loop) as long as it parses: bound the
    # tokens first by what the largest valid tensor needs (a cheap scan).
    if head.count(b",") > max_values + 1000:
        raise _bad(f"the inference request holds more values than a batch can ({max_values})")
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"malformed inference request JSON: {e}") from None
    except RecursionError:
        raise ApiError(
            400, "invalid_json", "the inference request JSON is nested too deeply"
        ) from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_json", "the inference request must be a JSON object")
    return doc, binary


def _flag(value: object) -> bool:
    return value is True  # JSON booleans only: "false" is not true


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _input_spec(model: ServedModel, doc: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The one input's spec and its checked shape [batch, *sample_shape]."""
    m = model.tagger.manifest
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"expected exactly one input, {m.onnx.input_name!r}")
    spec = inputs[0]
    if spec.get("name") != m.onnx.input_name:
        raise _bad(f"unknown input {spec.get('name')!r}; expected {m.onnx.input_name!r}")
    want_type = _DATATYPES[m.preprocessing.input_dtype]
    if spec.get("datatype") != want_type:
        raise _bad(f"input datatype {spec.get('datatype')!r}; expected {want_type!r}")
    shape = spec.get("shape")
    sample = list(model.tagger.runner.sample_shape)
    if (
        not isinstance(shape, list)
        or len(shape) != 1 + len(sample)
        or not all(type(d) is int for d in shape)  # bool is an int subclass: refuse it
        or shape[1:] != sample
        or shape[0] < 1
    ):
        raise _bad(f"input shape {shape}; expected [batch, {', '.join(map(str, sample))}]")
    limit = max(model.settings.max_batch_size, model.settings.max_images_per_request)
    if shape[0] > limit:
        raise ApiError(422, "too_many_images", f"batch of {shape[0]}; the limit is {limit}")
    return spec, shape


def _input_tensor(model: ServedModel, doc: dict[str, Any], binary: bytes) -> np.ndarray:
    spec, shape = _input_spec(model, doc)
    dtype = model.tagger.runner.dtype
    want_type = _DATATYPES[model.tagger.manifest.preprocessing.input_dtype]
    count = int(np.prod(shape))
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if type(size) is not int or len(binary) != size:
            raise _bad(
                f"binary_data_size {size!r} does not match the {len(binary)} bytes that follow"
            )
        if size != count * dtype.itemsize:
            raise _bad(f"{size} bytes of {want_type}; shape {shape} needs {count}")
        arr = np.frombuffer(binary, dtype=dtype)
    else:
        try:
            values = np.asarray(spec.get("data"))
        except (TypeError, ValueError, OverflowError, RecursionError):
            values = np.asarray([], dtype=object)
        if values.dtype.kind not in "iuf":  # numeric strings, booleans, nulls: refused
            raise _bad(f"input data is not a list of numbers ({want_type})")
        values = values.astype(np.float64).reshape(-1)
        if values.size != count:
            raise _bad(f"input has {values.size} values; shape {shape} needs {count}")
        if dtype == np.uint8 and not (
            np.all((values >= 0) & (values <= 255)) and np.all(values == np.round(values))
        ):
            raise _bad("UINT8 input values must be integers in 0..255")
        arr = values.astype(dtype)
    if dtype != np.uint8 and not np.all(np.isfinite(arr)):
        raise _bad("input contains NaN or infinite values")
    return arr.reshape(shape)


def _requested_outputs(doc: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The request's `outputs` (a list of objects naming this model's outputs), or []."""
    outputs = doc.get("outputs")
    if outputs is None:
        return []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _bad('outputs must be a list of objects, e.g. [{"name": "..."}]')
    for requested in outputs:
        if requested.get("name") not in names:
            raise _bad(f"unknown output requested; this model has {names}")
    return outputs


def _wants_binary(doc: dict[str, Any], outputs: list[dict[str, Any]]) -> bool:
    params = doc.get("parameters") or {}
    default = _flag(params.get("binary_data_output")) if isinstance(params, dict) else False
    for out in outputs:
        p = out.get("parameters") or {}
        if isinstance(p, dict) and "binary_data" in p:
            return _flag(p["binary_data"])
    return default


def _parse_request(
    model: ServedModel, header_len: str | None, body: bytes
) -> tuple[dict[str, Any], np.ndarray, list[str], bool]:
    """JSON + tensor decoding (CPU work for big JSON tensors: runs in the pool): the request
    document, the input batch, the outputs to return (by name, in order; the probabilities
    when none is named), and whether they go back as binary."""
    limit = max(model.settings.max_batch_size, model.settings.max_images_per_request)
    max_values = limit * int(np.prod(model.tagger.runner.sample_shape))
    doc, binary = _split_body(header_len, body, max_values)
    outputs = _requested_outputs(doc, list(_output_shapes(model)))
    names = list(dict.fromkeys(o["name"] for o in outputs)) or [
        model.tagger.manifest.onnx.output_name
    ]
    return doc, _input_tensor(model, doc, binary), names, _wants_binary(doc, outputs)


async def _infer(request: Request, model: ServedModel) -> Response:
    """read -> parse -> admit -> infer -> respond (admitted at arrival by the middleware)."""
    m = model.tagger.manifest
    guard = RequestGuard(request, request_deadline(request, None))
    try:
        body = await guard.read_body(request.body())
        header_len = request.headers.get(_HEADER_LENGTH.lower())
        doc, batch, names, binary_out = await model.decoder.offload(
            _parse_request, model, header_len, body
        )
        explain = names != [m.onnx.output_name]  # the heatmaps: only the explain graph has them
        with admitted(request, model, len(batch)) as reservation:
            rows = await infer_samples(request, model, list(batch), guard, reservation, explain)
    finally:
        guard.close()
    tensors = _tensors(model, np.stack(rows).astype(np.float32), explain)
    if not all(np.all(np.isfinite(t)) for t in tensors.values()):
        raise ApiError(500, "model_error", "the model returned non-finite scores")
    model.metrics.images_ok.inc(len(rows))
    result: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if "id" in doc:
        result["id"] = doc["id"]
    return _response(result, [(name, tensors[name]) for name in names], binary_out)


def _tensors(model: ServedModel, rows: np.ndarray, explain: bool) -> dict[str, np.ndarray]:
    """The batch's rows -> each output's tensor by name."""
    m = model.tagger.manifest
    if not explain or m.onnx.explain is None:
        return {m.onnx.output_name: rows}
    c, spec = len(m.labels), m.onnx.explain
    maps = rows[:, c:].reshape(len(rows), c, spec.height, spec.width)
    return {m.onnx.output_name: rows[:, :c], spec.output_name: maps}


def _response(
    result: dict[str, Any], tensors: list[tuple[str, np.ndarray]], binary_out: bool
) -> Response:
    """JSON outputs, or (binary_data_output) the JSON then each tensor's bytes in order."""
    outputs: list[dict[str, Any]] = [
        {"name": name, "datatype": "FP32", "shape": list(t.shape)} for name, t in tensors
    ]
    result["outputs"] = outputs
    if binary_out:
        blobs = [np.ascontiguousarray(t).tobytes() for _, t in tensors]
        for out, blob in zip(outputs, blobs, strict=True):
            out["parameters"] = {"binary_data_size": len(blob)}
        head = json.dumps(result).encode()
        return Response(
            head + b"".join(blobs),
            media_type="application/octet-stream",
            headers={_HEADER_LENGTH: str(len(head))},
        )
    for out, (_, t) in zip(outputs, tensors, strict=True):
        out["data"] = t.reshape(-1).tolist()
    return JSONResponse(result)


# The body is parsed by hand (JSON, or JSON + binary tensors); describe it for OpenAPI.
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(InferRequest)},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "The JSON request, then the binary tensor data; the JSON's "
                f"length in the {_HEADER_LENGTH} header.",
            },
        },
    }
}


@router.post(
    "/models/{name}/infer", summary="Inference on preprocessed tensors", openapi_extra=_INFER_BODY
)
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, ready_model(request, name))


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference (versioned)",
    openapi_extra=_INFER_BODY,
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, ready_model(request, name, version))
