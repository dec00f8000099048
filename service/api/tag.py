"""POST /tag: images in (multipart, raw image body, or base64 JSON), tags out."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mltag_artifact.preprocess import SUPPORTED_FORMATS_TEXT, ImageError
from mltag_artifact.tagger import Selection, Tagger

from ..inference.decoder import Decoded
from ..inference.served_model import ServedModel, decode_limits, split_explained
from . import explain
from .errors import ApiError, image_error
from .multipart import MultipartError, parse_multipart
from .pipeline import (
    RequestGuard,
    admitted,
    decode_and_infer,
    no_heatmaps,
    ready_model,
    request_deadline,
)
from .schemas import (
    ErrorResponse,
    TagJsonRequest,
    TagOptions,
    TagQuery,
    TagResponse,
    inline_schema,
)

router = APIRouter(tags=["tagging"])

_CONTENT_TYPES = (
    "multipart/form-data (one or more file fields named 'image'), a raw image body "
    "(Content-Type image/* or application/octet-stream), or application/json "
    '({"images": [{"b64": ...}]})'
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 429, 503, 504)
}


def _options(**values: Any) -> TagOptions:
    """Validate options strictly (no bool-as-number, no numeric strings) -> 422 naming the field."""
    try:
        return TagOptions.model_validate(values)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", _first_error(e)) from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def _parse_thresholds(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(
            422, "invalid_request", 'thresholds must be a JSON object, e.g. {"dog": 0.3}'
        ) from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_request", "thresholds must be a JSON object of label: value")
    return value


def _check_options(tagger: Tagger, options: TagOptions) -> None:
    """Threshold overrides and label filters name known labels, at most one each (bounded by
    the label count before anything iterates over them); categories are the model's."""
    for field in ("thresholds", "include_labels", "exclude_labels"):
        _check_labels(tagger, getattr(options, field), field)
    if options.categories:
        known = {c for c in tagger.categories if c is not None}
        unknown = sorted(set(options.categories) - known)
        if unknown:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown categories {unknown[:5]}; the model's are {sorted(known)[:50]}",
            )


def _check_labels(tagger: Tagger, names: Collection[str] | None, field: str) -> None:
    if not names:
        return
    if len(names) > len(tagger.labels):
        raise ApiError(
            422,
            "invalid_request",
            f"{field} has {len(names)} entries; the model has {len(tagger.labels)} labels",
        )
    unknown = tagger.unknown_labels(names)
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ApiError(
            422,
            "unknown_label",
            f"unknown label(s) in {field}: {shown}{more}; GET /labels lists the model's labels",
        )


@dataclass
class Upload:
    """The images of one request, and its options (a JSON body may set them too)."""

    payloads: list[bytes]
    names: list[str | None]
    options: TagOptions


def _images_of_form(body: bytes, content_type: str) -> tuple[list[bytes], list[str | None]]:
    """The files in the multipart fields named 'image' (CPU work: runs in the pool)."""
    try:
        parts = (
            [p for p in parse_multipart(body, content_type) if p.name == "image"] if body else []
        )
    except MultipartError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    if not parts:
        raise ApiError(
            400, "no_image", "no image found: send each file in a multipart field named 'image'"
        )
    if any(p.filename is None for p in parts):
        raise ApiError(400, "no_image", "the 'image' field must be a file upload, not text")
    return [bytes(p.data) for p in parts], [p.filename for p in parts]


MAX_JSON_IMAGES = 1000  # far above any image limit; only bounds the member count above
_DATA_URI = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")


def _decode_b64(text: str, index: int) -> bytes:
    """Standard base64; a `data:...;base64,` prefix and line breaks are tolerated."""
    raw = _WHITESPACE.sub(b"", _DATA_URI.sub("", text, count=1).encode("ascii", "replace"))
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400,
            "invalid_base64",
            f"images[{index}].b64 is not valid base64 (standard alphabet, '=' padding)",
        ) from None


def _parse_json_request(body: bytes, query: TagOptions, tagger: Tagger) -> tuple[Upload, bool]:
    """Validate the JSON request, merge its options over the query string's, check its
    threshold labels and decode its images: CPU work proportional to the body, so it runs in
    the pool, never on the event loop. Also says whether the body set `timeout_ms`."""
    # JSON parsing holds the GIL (and so stalls the event loop) for as long as it takes: bound
    # the number of members first (a cheap scan), by what a valid request can hold: one
    # threshold per label, a few fields per image.
    members, most = body.count(b":"), len(tagger.labels) + 64 + 4 * MAX_JSON_IMAGES
    if members > most:
        raise ApiError(
            422,
            "invalid_request",
            f"the JSON body has {members} members; a request holds at most one threshold per "
            f"label ({len(tagger.labels)} labels)",
        )
    try:
        parsed = TagJsonRequest.model_validate_json(body)
    except ValidationError as e:
        if e.errors()[0]["type"] == "json_invalid":
            raise ApiError(400, "invalid_json", f"malformed JSON: {e.errors()[0]['msg']}") from None
        raise ApiError(422, "invalid_request", _first_error(e)) from None
    _check_labels(tagger, parsed.thresholds, "thresholds")
    given = parsed.model_dump(exclude={"images"}, exclude_unset=True)
    options = query.model_copy(update=given)
    payloads = [_decode_b64(img.b64, i) for i, img in enumerate(parsed.images)]
    names = [img.filename for img in parsed.images]
    return Upload(payloads, names, options), "timeout_ms" in given


def _header_text(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    # Starlette decodes headers as latin-1; clients send UTF-8 file names.
    return value.encode("latin-1").decode("utf-8", "replace") if value is not None else None


# The body is parsed by hand (three content types), so describe it for the OpenAPI docs.
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["image"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": inline_schema(TagJsonRequest)},
        },
    }
}


def _query_parameters(model: type[TagQuery]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from the model that parses them."""
    params = []
    for name, prop in model.model_json_schema()["properties"].items():
        description = prop.pop("description", "")
        params.append(
            {"name": name, "in": "query", "required": False, "description": description,
             "schema": prop}
        )  # fmt: skip
    return params


def _query(request: Request) -> TagQuery:
    try:
        return TagQuery.model_validate(request.query_params)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", _first_error(e)) from None


@router.post(
    "/tag",
    response_model=TagResponse,
    responses=_ERRORS,
    openapi_extra={**_REQUEST_BODY, "parameters": _query_parameters(TagQuery)},
    summary="Tag one or more images",
    description=f"Send {_CONTENT_TYPES}. Supported image formats: {SUPPORTED_FORMATS_TEXT}. "
    "Tags are filtered by the model's calibrated per-label thresholds unless overridden. "
    "explain=true adds each tag's heatmap (where in the image its evidence lies), for models "
    "exported with an explain graph.",
)
async def tag(request: Request) -> JSONResponse:
    # The route takes only the request, and parses its query string itself: FastAPI's
    # per-parameter solving costs event-loop time on every request (benchmarks/RESULTS.md,
    # "A leaner /tag request path").
    # Admission: the middleware reserved one slot when the request arrived, before its body.
    query = _query(request)
    model = ready_model(request, query.model, query.version)
    options = _options_of(query)
    guard = RequestGuard(
        request, request_deadline(request, options.timeout_ms), options.timeout_ms is not None
    )
    try:
        upload = await _read(request, model, guard, options)
        _check(model, upload)
        explain = upload.options.explain
        with admitted(request, model, len(upload.payloads)) as reservation:  # 429 before decoding
            decoded, rows = await decode_and_infer(
                request, model, upload.payloads, guard, reservation, explain
            )
        if not explain:
            return _respond(model, upload, decoded, rows)
        probs, maps = _split(model, rows)
        response = _results(model, upload, decoded, probs)
        await _explain(model, upload, response, dict(zip(_ok(decoded), maps, strict=True)), guard)
        return JSONResponse(response)
    finally:
        guard.close()


def _ok(decoded: list[Decoded]) -> list[int]:
    return [i for i, d in enumerate(decoded) if not isinstance(d, ImageError)]


def _split(model: ServedModel, rows: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The explain graph's rows -> probabilities (C,) and raw maps (C, h, w) per image."""
    spec = model.tagger.manifest.onnx.explain
    assert spec is not None  # the request was checked against the model
    parts = [split_explained(row, len(model.tagger.labels)) for row in rows]
    return [p for p, _ in parts], [m.reshape(-1, spec.height, spec.width) for _, m in parts]


async def _explain(
    model: ServedModel,
    upload: Upload,
    response: dict[str, Any],
    maps: dict[int, np.ndarray],
    guard: RequestGuard,
) -> None:
    """Each returned tag's heatmap: a [0, 1] grid, or a PNG overlay (rendered in the pool)."""
    index = model.tagger.label_index
    for result in response["results"]:
        raw = maps.get(result["index"])
        if raw is None or result["error"] is not None:
            continue
        tags = result["tags"]
        chosen = [index[t["label"]] for t in tags]
        if upload.options.explain_format == "json":
            explain.attach(tags, "heatmap", explain.grids(raw, chosen))
            continue
        payload = upload.payloads[result["index"]]
        prep, limits = model.tagger.manifest.preprocessing, decode_limits(model.settings)
        pngs = await guard.run(
            model.decoder.offload(explain.overlays, payload, raw, chosen, prep, limits)
        )
        explain.attach(tags, "heatmap_png", pngs)


def _options_of(query: TagQuery) -> TagOptions:
    def names(text: str | None) -> list[str] | None:
        return [n.strip() for n in text.split(",") if n.strip()] if text is not None else None

    return _options(
        top_k=query.top_k,
        min_score=query.min_score,
        thresholds=_parse_thresholds(query.thresholds),
        all_scores=query.all_scores,
        timeout_ms=query.timeout_ms,
        include_parents=query.include_parents,
        include_labels=names(query.include_labels),
        exclude_labels=names(query.exclude_labels),
        categories=names(query.categories),
        explain=query.explain,
        explain_format=query.explain_format,
    )


async def _read(
    request: Request, model: ServedModel, guard: RequestGuard, options: TagOptions
) -> Upload:
    """The request's images, by content type; JSON options override the query string's."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        body = await guard.read_body(request.body())
        content_type = request.headers["content-type"]
        return Upload(*await model.decoder.offload(_images_of_form, body, content_type), options)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        body = await guard.read_body(request.body())
        return Upload([body], [_header_text(request, "x-filename")], options)
    if ctype == "application/json":
        body = await guard.read_body(request.body())
        if not body:
            raise ApiError(400, "empty_body", "the request body is empty")
        upload, shortened = await model.decoder.offload(
            _parse_json_request, body, options, model.tagger
        )
        if shortened:
            deadline = request_deadline(request, upload.options.timeout_ms)
            guard.deadline = min(guard.deadline, deadline)
        return upload
    if not ctype:
        raise ApiError(
            415, "unsupported_media_type", f"missing Content-Type; send {_CONTENT_TYPES}"
        )
    raise ApiError(
        415, "unsupported_media_type", f"unsupported Content-Type {ctype!r}; send {_CONTENT_TYPES}"
    )


def _check(model: ServedModel, upload: Upload) -> None:
    limit = model.settings.max_images_per_request
    if len(upload.payloads) > limit:
        raise ApiError(
            422,
            "too_many_images",
            f"{len(upload.payloads)} images in one request; the limit is {limit}",
        )
    if len(upload.payloads) == 1 and not upload.payloads[0]:
        raise ApiError(400, "empty_body", "the image is empty (0 bytes)")
    _check_options(model.tagger, upload.options)  # cheap: bounded by the label count
    if upload.options.explain and model.explain_batcher is None:
        raise no_heatmaps(model)


def _respond(
    model: ServedModel,
    upload: Upload,
    decoded: list[Decoded],
    probs: list[np.ndarray],
) -> JSONResponse:
    return JSONResponse(_results(model, upload, decoded, probs))


def _results(
    model: ServedModel,
    upload: Upload,
    decoded: list[Decoded],
    probs: list[np.ndarray],
) -> dict[str, Any]:
    """One result per image, in order; a lone bad image is the request's own error."""
    metrics = model.metrics
    if len(decoded) == 1 and isinstance(decoded[0], ImageError):
        metrics.images_error.inc()
        raise image_error(decoded[0])
    by_index = dict(zip(_ok(decoded), probs, strict=True))
    tagger, options = model.tagger, upload.options
    thr = tagger.thresholds(options.min_score, options.thresholds)
    how = _selection(options)
    results: list[dict[str, Any]] = []
    n_err = 0
    for i, item in enumerate(decoded):
        result: dict[str, Any] = {
            "index": i,
            "filename": upload.names[i],
            "tags": [],
            "error": None,
        }
        p = by_index.get(i)
        if isinstance(item, ImageError):
            result["error"] = {"code": item.code, "message": str(item)}
        elif p is None or not np.all(np.isfinite(p)):
            result["error"] = {
                "code": "model_error",
                "message": "the model returned no valid score",
            }
        else:
            result["tags"] = [t.as_dict() for t in tagger.select(p, thr, how)]
            if options.all_scores:
                result["scores"] = dict(zip(tagger.labels, map(float, p), strict=True))
        n_err += result["error"] is not None
        results.append(result)
    metrics.images_ok.inc(len(decoded) - n_err)
    if n_err:
        metrics.images_error.inc(n_err)
    return {"model": {"name": model.name, "version": model.version}, "results": results}


def _selection(options: TagOptions) -> Selection:
    def frozen(names: list[str] | None) -> frozenset[str] | None:
        return frozenset(names) if names is not None else None

    return Selection(
        top_k=options.top_k,
        include_parents=options.include_parents,
        include=frozen(options.include_labels),
        exclude=frozen(options.exclude_labels),
        categories=frozen(options.categories),
    )
