"""One pure-ASGI middleware for what every request needs: request id, auth, draining,
body limit, in-flight count, latency metric and the access log. Pure ASGI (not
BaseHTTPMiddleware) to keep per-request overhead low and streaming bodies intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.common import queue_full_message
from .api.errors import BodyTooLargeError
from .inference.batcher import BatcherClosedError, QueueFullError, Reservation
from .state import ServiceState

log = logging.getLogger("mltag.access")

# Never refused while draining or for lack of an API key: probes and scrapers must work.
OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/docs", "/redoc",
     "/openapi.json"}
)  # fmt: skip
# Paths that are their own route template, for requests refused before routing.
KNOWN_PATHS = OPEN_PATHS | {"/tag", "/labels", "/v2"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_INFER_PATH = re.compile(r"^/(tag|v2/models/[^/]+(/versions/[^/]+)?/infer)$")


def _printable(path: str) -> str:
    """Escape control characters so a crafted URL cannot forge log lines."""
    return repr(path)[1:-1][:512]


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def _reply(
        self, send: Send, status: int, code: str, message: str, request_id: str, path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:  # fmt: skip
        if path.startswith("/v2"):
            payload: dict[str, object] = {"error": message}
        else:
            payload = {"error": {"code": code, "message": message}, "request_id": request_id}
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state, settings = self.state, self.state.settings
        start = time.monotonic()
        path: str = scope["path"]
        headers = dict(scope["headers"])
        given_id = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given_id if _REQUEST_ID.match(given_id) else uuid.uuid4().hex
        scope.setdefault("state", {}).update(request_id=request_id, start=start)
        status_holder = [500]
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status_holder[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if state.draining:  # keep-alive clients must not reuse a closing server
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        open_path = path in OPEN_PATHS
        held: Reservation | None = None
        rejection: tuple[int, str, str, str] | None = None
        extra_headers: list[tuple[bytes, bytes]] = []
        if state.draining and not open_path:
            rejection = (503, "draining", "the service is shutting down", "draining")
            extra_headers = [(b"connection", b"close"), (b"retry-after", b"1")]
        elif (
            settings.api_key
            and not open_path
            and scope["method"] != "OPTIONS"  # CORS preflight carries no credentials
            and not self._authorised(headers)
        ):
            rejection = (401, "unauthorized", "missing or wrong API key (X-API-Key header)",
                         "unauthorized")  # fmt: skip
            extra_headers = [(b"www-authenticate", b"ApiKey")]
        else:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
                rejection = (
                    413, "payload_too_large",
                    f"request body of {int(length)} bytes exceeds the limit of "
                    f"{settings.max_body_bytes} bytes", "too_large",
                )  # fmt: skip
                extra_headers = [(b"connection", b"close")]
            elif (
                state.batcher is not None and scope["method"] == "POST" and _INFER_PATH.match(path)
            ):
                # Admission at arrival, before the body is read or parsed: under overload the
                # event loop is the scarce resource, and a 429 must stay cheap and fast. The
                # slot is held through the upload, so a request admitted here is not refused
                # later (the endpoint resizes it to the request's image count). An unread
                # body is discarded by the server; the connection stays usable.
                try:
                    held = state.batcher.reserve(1)
                    scope.setdefault("state", {})["reservation"] = held
                except QueueFullError as e:
                    message = queue_full_message(state.batcher.max_queue_size, e.retry_after_s)
                    rejection = (429, "queue_full", message, "queue_full")
                    extra_headers = [(b"retry-after", str(e.retry_after_s).encode())]
                except BatcherClosedError:
                    rejection = (503, "draining", "the service is shutting down", "draining")
                    extra_headers = [(b"connection", b"close"), (b"retry-after", b"1")]

        if rejection is not None:
            status, code, message, reason = rejection
            state.metrics.rejected.labels(reason).inc()
            await self._reply(send, status, code, message, request_id, path, extra_headers)
            self._observe(scope, path, status, start, request_id)
            return

        limit = settings.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    state.metrics.rejected.labels("too_large").inc()
                    raise BodyTooLargeError(limit)
            return message

        tracked = not open_path
        if tracked:
            state.in_flight += 1
            state.metrics.in_flight.inc()
        try:
            await self.app(scope, receive_limited, send_wrapper)
        except asyncio.CancelledError:
            # Cancelled by the server's shutdown after the drain timeout: say so in JSON.
            if not started:
                status_holder[0] = 503
                with contextlib.suppress(Exception):
                    await self._reply(send, 503, "draining", "the service shut down before this "
                                      "request finished", request_id, path)  # fmt: skip
            raise
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), _printable(path))
            if not started:  # a JSON 500 with the request id; the connection stays usable
                status_holder[0] = 500
                await self._reply(
                    send, 500, "internal_error", "internal server error", request_id, path
                )
        finally:
            if held is not None and state.batcher is not None:
                state.batcher.release(held)  # room the endpoint did not queue or never took
            if tracked:
                state.in_flight -= 1
                state.metrics.in_flight.dec()
            self._observe(scope, path, status_holder[0], start, request_id)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        key = self.state.settings.api_key or ""
        given = headers.get(b"x-api-key", b"")
        if not given:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        return secrets.compare_digest(given, key.encode())

    def _observe(self, scope: Scope, path: str, status: int, start: float, request_id: str) -> None:
        elapsed = time.monotonic() - start
        route = scope.get("route")
        # Route templates keep the label set small (never one series per URL).
        endpoint = getattr(route, "path", None) or (path if path in KNOWN_PATHS else "other")
        self.state.metrics.request_duration.labels(endpoint, _status_class(status)).observe(elapsed)
        if path not in ("/livez", "/readyz", "/metrics"):
            log.info(
                "%s %s %d %.1fms",
                scope.get("method", "?"),
                _printable(path),
                status,
                elapsed * 1000,
                extra={"request_id": request_id, "status": status, "duration_ms": elapsed * 1000},
            )
