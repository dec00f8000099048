"""One JSON error shape for every failure, `{"error": {"code", "message"}, "request_id"}`
(`{"error": message}` under /v2, as the Open Inference Protocol says), and the map from the
contract's machine codes onto HTTP statuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mltag_artifact.preprocess import ImageError

log = logging.getLogger("mltag.api")


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class BodyTooLargeError(Exception):
    """Raised from the body-limiting receive wrapper when a body exceeds the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


DRAINING = "the service is shutting down"


def queue_full_message(max_queue_size: int, retry_after_s: int) -> str:
    return (
        f"the server is at capacity ({max_queue_size} images queued or being decoded); "
        f"retry after {retry_after_s} s"
    )


# The contract's image error codes (mltag_artifact.preprocess) as HTTP statuses.
IMAGE_ERROR_STATUS = {
    "invalid_image": 422,
    "unsupported_format": 415,
    "image_too_large": 413,
    "extreme_aspect_ratio": 422,
    "empty_image": 400,
    "decode_budget_exhausted": 429,
}


def image_error(e: ImageError) -> ApiError:
    return ApiError(IMAGE_ERROR_STATUS[e.code], e.code, str(e))


def error_body(path: str, code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The error document for a request to `path`."""
    if path.startswith("/v2"):
        return {"error": message}  # the Open Inference Protocol's error shape
    return {"error": {"code": code, "message": message}, "request_id": request_id}


def error_bytes(path: str, code: str, message: str, request_id: str | None) -> bytes:
    return json.dumps(error_body(path, code, message, request_id)).encode()


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = error_body(request.url.path, code, message, request_id)
    return JSONResponse(body, status_code=status, headers=headers)


# Codes for the HTTP errors Starlette and FastAPI raise themselves (unknown path, wrong method,
# an unparseable multipart body); ours are raised as ApiError with their own code.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
HTTP_ERROR_FALLBACK = "http_error"


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _count_rejection(request: Request, status: int) -> None:
    """Client errors in the rejection counter (429/499/503/504 are counted where they arise)."""
    reason = {400: "bad_request", 413: "too_large", 415: "bad_request", 422: "bad_request"}.get(
        status
    )
    if reason is not None:
        request.app.state.mltag.metrics.rejected.labels(reason).inc()


def install_error_handlers(app: FastAPI) -> None:
    """Anything not handled here reaches ServiceMiddleware, which answers a JSON 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _count_rejection(request, exc.status)
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return error_response(request, 413, "payload_too_large", str(exc))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("client went away during the upload of %s", request.url.path)
        request.app.state.mltag.metrics.rejected.labels("client_gone").inc()
        return error_response(request, 499, "client_closed_request", "the client went away")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count_rejection(request, 422)
        return error_response(request, 422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, HTTP_ERROR_FALLBACK)
        _count_rejection(request, exc.status_code)
        return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)
