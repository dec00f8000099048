"""uvicorn's httptools protocol, with limits on what a connection may send before a request
reaches the app (header size and time, connection count), sending each response's head and
body in one write.

uvicorn writes the status line + headers, then the body, as two socket writes. On loopback
and small responses each write is a full TCP send that wakes the client (measured in
benchmarks/RESULTS.md, "A leaner /tag request path"). Holding the head until the body's
first write (or the end of the current loop iteration, whichever comes first) makes it one,
without changing what is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .api.errors import error_bytes

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 16 * 1024


class CoalescingTransport:
    """Wraps a transport: a response head is held briefly and sent with what follows it.
    Order is kept: any other write, `close` or the next loop iteration sends it first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head + bytes(data))
        elif (
            isinstance(data, bytes)
            and len(data) <= _MAX_HEAD
            and data.startswith(_HEAD_START)
            and data.endswith(_HEAD_END)
        ):
            self._head = data
            self._loop.call_soon(self.flush)  # a head with no body (yet) still goes out
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


@dataclass(frozen=True)
class HttpLimits:
    """What a connection may do before a request reaches the app."""

    max_header_bytes: int = 16 * 1024  # request line + all headers
    max_header_line_bytes: int = 8 * 1024  # the request line, or one header
    header_timeout_s: float = 10.0  # from the first byte of a request (or the connection)
    max_connections: int = 2048  # open connections; beyond, new ones get 503 and close


def _refusal(status: int, code: str, message: str) -> bytes:
    """A complete response, written by the protocol itself before any app is involved."""
    body = error_bytes("", code, message, None)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def coalescing_protocol(limits: HttpLimits | None = None) -> type[asyncio.Protocol]:
    """The guarded protocol class bound to `limits` (uvicorn[standard] always has httptools)."""
    bound = {"bounds": limits or HttpLimits()}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), bound)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with coalesced writes and the limits httptools itself
    does not have (header size and time, connection count)."""

    bounds = HttpLimits()
    _header_bytes = 0  # the current request's line and headers, as parsed
    _unparsed = 0  # bytes received while its headers are still incomplete
    _refused: bytes | None = None  # set while parsing: answer it and close
    _header_timer: asyncio.TimerHandle | None = None
    _requests = 0  # requests begun on this connection
    _in_headers = False  # a request has begun arriving; its headers are not complete

    @property
    def awaiting_request(self) -> bool:
        """Accepted but its first request not yet begun, or a request's headers only partly
        here: closing it now would drop a request the client is sending (the shutdown waits
        for these; an idle keep-alive connection between requests is not one)."""
        return (
            self._refused is None
            and not self.transport.is_closing()
            and (self._requests == 0 or self._in_headers)
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
        if len(self.connections) > self.bounds.max_connections:
            message = f"the server has {self.bounds.max_connections} open connections; retry later"
            self._answer_and_close(_refusal(503, "too_many_connections", message))
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return
        super().data_received(data)
        if self._refused is None and self._header_timer is not None:
            # Still inside the headers after this chunk: httptools buffers an unfinished
            # header line without any limit, so bound what arrives meanwhile.
            self._unparsed += len(data)
            if self._unparsed > self.bounds.max_header_bytes:
                self._too_large()
        if self._refused is not None:
            self._answer_and_close(self._refused)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._unparsed = 0
        self._requests += 1
        self._in_headers = True
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))
        if len(self.url) > self.bounds.max_header_line_bytes:
            self._refuse_headers(
                f"the request line is over {self.bounds.max_header_line_bytes} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.bounds.max_header_line_bytes:
            self._refuse_headers(f"a header is over {self.bounds.max_header_line_bytes} bytes")
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._in_headers = False
        if self._refused is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused is None:
            super().on_message_complete()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.bounds.max_header_bytes:
            self._too_large()

    def _too_large(self) -> None:
        self._refuse_headers(f"the request headers are over {self.bounds.max_header_bytes} bytes")

    def _refuse_headers(self, message: str) -> None:
        if self._refused is None:
            self._refused = _refusal(431, "headers_too_large", message)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.bounds.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        message = f"the request headers did not arrive within {self.bounds.header_timeout_s:g} s"
        self._answer_and_close(_refusal(408, "request_timeout", message))

    def _answer_and_close(self, response: bytes) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
