"""One pure-ASGI middleware for what every request needs, in order: a request id; refusals that
need no body (draining, API key, declared body size, admission at arrival); the body limit;
the in-flight count; a JSON 500 for anything unhandled; the latency metric and the access log.
Pure ASGI (not BaseHTTPMiddleware) keeps per-request overhead low and streaming bodies intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..inference.admission import AdmissionClosedError, QueueFullError, Reservation
from ..inference.registry import ModelNotFoundError
from ..inference.served_model import ServedModel
from ..state import ServiceState
from .errors import DRAINING, BodyTooLargeError, error_bytes, queue_full_message
from .uploads import Upload

log = logging.getLogger("mltag.access")

# Never refused while draining or for lack of an API key: probes and scrapers must work.
PROBE_PATHS = frozenset(
    {"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
)  # fmt: skip
# Never refused while draining; they need the API key unless `docs_public`.
DOC_PATHS = frozenset({"/docs", "/redoc", "/openapi.json"})
# The browser page and its assets: static, never refused for lack of the API key (the page
# asks for it, and sends it with its API calls).
PAGE_PATHS = frozenset({"/", "/ui/app.js", "/ui/app.css"})
OPEN_PATHS = PROBE_PATHS | DOC_PATHS | PAGE_PATHS
# Paths that are their own route template, for requests refused before routing.
KNOWN_PATHS = OPEN_PATHS | {"/tag", "/labels", "/v2"}
_QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})  # not in the access log
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_INFER_PATH = re.compile(
    r"^/(?:tag|v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer)$"
)
_CLOSE = (b"connection", b"close")


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    return b"transfer-encoding" in headers or (length is not None and length not in (b"0", b""))


def _printable(path: str) -> str:
    """Escape control characters so a crafted URL cannot forge log lines."""
    return repr(path)[1:-1][:512]


@dataclass(slots=True)
class Refusal:
    status: int
    code: str
    message: str
    reason: str  # mltag_requests_rejected_total label
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    path: str
    method: str
    request_id: str
    start: float
    status: int = 500
    started: bool = False  # the response head was sent
    upload: Upload | None = None  # its body, while one is expected


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        req = self._begin(scope, headers)
        refusal = self._refusal(scope, req, headers)
        if refusal is not None:
            self.state.metrics.rejected.labels(refusal.reason).inc()
            await self._reply(send, req, refusal.status, refusal.code, refusal.message,
                              refusal.headers)  # fmt: skip
            self._observe(scope, req)
            return
        tracked = req.path not in OPEN_PATHS
        if tracked:
            self.state.track(1)
        if _has_body(headers):
            task = asyncio.current_task()
            assert task is not None
            req.upload = self.state.uploads.start(lambda: task.cancel("slow upload"))
        try:
            await self._run(scope, receive, send, req)
        finally:
            if req.upload is not None:
                req.upload.close()
            model: ServedModel | None = scope["state"].get("model")
            if model is not None:
                held: Reservation | None = scope["state"].get("reservation")
                if held is not None:
                    model.admission.release(held)  # room the endpoint did not use
                model.release()
            if tracked:
                self.state.track(-1)
            self._observe(scope, req)

    def _begin(self, scope: Scope, headers: dict[bytes, bytes]) -> _Request:
        """The request id (the client's when well-formed) and start time, in scope["state"]."""
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        start = time.monotonic()
        scope.setdefault("state", {}).update(request_id=request_id, start=start)
        return _Request(scope["path"], scope.get("method", "?"), request_id, start)

    def _refusal(self, scope: Scope, req: _Request, headers: dict[bytes, bytes]) -> Refusal | None:
        """Refuse what can be refused before the body is read; admit inference requests."""
        state, settings = self.state, self.state.settings
        open_path = req.path in OPEN_PATHS
        if state.draining and not open_path:
            return Refusal(503, "draining", DRAINING, "draining", [_CLOSE, (b"retry-after", b"1")])
        public = (
            req.path in PROBE_PATHS
            or req.path in PAGE_PATHS
            or (settings.docs_public and req.path in DOC_PATHS)
        )
        if (
            settings.api_key
            and not public
            and req.method != "OPTIONS"  # CORS preflight carries no credentials
            and not self._authorised(headers)
        ):
            return Refusal(401, "unauthorized", "missing or wrong API key (X-API-Key header)",
                           "unauthorized", [(b"www-authenticate", b"ApiKey")])  # fmt: skip
        if _has_body(headers) and state.uploads.full:
            return Refusal(429, "uploads_full", "the server is receiving too many request bodies"
                           "; retry later", "uploads_full", [(b"retry-after", b"1")])  # fmt: skip
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return Refusal(
                413, "payload_too_large",
                f"request body of {int(length)} bytes exceeds the limit of "
                f"{settings.max_body_bytes} bytes", "too_large", [_CLOSE],
            )  # fmt: skip
        if req.method == "POST" and (target := _INFER_PATH.match(req.path)):
            return self._admit(scope, target)
        return None

    def _admit(self, scope: Scope, target: re.Match[str]) -> Refusal | None:
        """Admission at arrival, before the body is read or parsed: under overload the event
        loop is the scarce resource, and a 429 must stay cheap and fast. The slot is held
        through the upload, so a request admitted here is not refused later (the endpoint
        resizes it to the request's image count). An unread body is discarded by the server;
        the connection stays usable. The request holds the model version it resolves to here
        until it ends (a new version swapped in meanwhile serves only later requests)."""
        name, version = target.group("name"), target.group("version")
        query = scope.get("query_string", b"")
        if name is None and (b"model=" in query or b"version=" in query):
            params = parse_qs(query.decode("latin-1"))
            name, version = params.get("model", [None])[0], params.get("version", [None])[0]
        registry = self.state.registry
        try:
            model = registry.resolve(name, version) if registry is not None else None
        except ModelNotFoundError:
            model = None
        if model is None:
            return None  # the endpoint answers: 503 not_ready or 404 model_not_found
        try:
            held = model.admission.reserve_upload()
        except QueueFullError as e:
            message = queue_full_message(model.admission.max_queue_size, e.retry_after_s)
            retry = (b"retry-after", str(e.retry_after_s).encode())
            return Refusal(429, "queue_full", message, "queue_full", [retry])
        except AdmissionClosedError:
            return Refusal(503, "draining", DRAINING, "draining", [_CLOSE, (b"retry-after", b"1")])
        model.acquire()
        scope["state"]["model"] = model
        if held is not None:
            scope["state"]["reservation"] = held
        return None

    async def _run(self, scope: Scope, receive: Receive, send: Send, req: _Request) -> None:
        """The app, with the body limit, the request id on the response, and JSON answers for
        a shutdown cancellation (503) or an unhandled error (500)."""
        limit, received = self.state.settings.max_body_bytes, 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                if req.upload is not None:
                    req.upload.add(chunk, message.get("more_body", False))
                if received > limit:
                    self.state.metrics.rejected.labels("too_large").inc()
                    raise BodyTooLargeError(limit)
            return message

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                req.started, req.status = True, message["status"]
                extra = [(b"x-request-id", req.request_id.encode())]
                if self.state.draining:  # keep-alive clients must not reuse a closing server
                    extra.append(_CLOSE)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive_limited, send_tagged)
        except asyncio.CancelledError:
            # Cancelled by us alone: an upload too slow, or abandoned at the drain timeout.
            # Say so in JSON and end the request here (the server finds nothing running).
            await self._cancelled(send, req)
        except Exception:
            log.exception("unhandled error on %s %s", req.method, _printable(req.path))
            if not req.started:  # a JSON 500 with the request id; the connection stays usable
                await self._reply(send, req, 500, "internal_error", "internal server error")

    async def _cancelled(self, send: Send, req: _Request) -> None:
        if req.upload is not None and req.upload.too_slow:
            rate = self.state.uploads.min_rate
            status, code, reason = 408, "request_timeout", "slow_upload"
            message = f"the upload was slower than {rate:.0f} bytes/s"
        else:
            status, code, reason = 503, "draining", "draining"
            message = "the service shut down before this request finished"
        self.state.metrics.rejected.labels(reason).inc()  # the access log line has the status
        if not req.started:
            with contextlib.suppress(Exception):
                await self._reply(send, req, status, code, message)

    async def _reply(
        self, send: Send, req: _Request, status: int, code: str, message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:  # fmt: skip
        body = error_bytes(req.path, code, message, req.request_id)
        req.status = status
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", req.request_id.encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        key = self.state.settings.api_key or ""
        given = headers.get(b"x-api-key", b"")
        if not given:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        return secrets.compare_digest(given, key.encode())

    def _observe(self, scope: Scope, req: _Request) -> None:
        elapsed = time.monotonic() - req.start
        route = scope.get("route")
        # Route templates keep the label set small (never one series per URL).
        endpoint = getattr(route, "path", None) or (
            req.path if req.path in KNOWN_PATHS else "other"
        )
        status_class = f"{req.status // 100}xx"
        self.state.metrics.request_duration.labels(endpoint, status_class).observe(elapsed)
        if req.path not in _QUIET_PATHS:
            log.info(
                "%s %s %d %.1fms",
                req.method,
                _printable(req.path),
                req.status,
                elapsed * 1000,
                extra={
                    "request_id": req.request_id,
                    "status": req.status,
                    "duration_ms": elapsed * 1000,
                },
            )
