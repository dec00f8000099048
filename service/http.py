"""uvicorn's httptools protocol, sending each response's head and body in one write.

uvicorn writes the status line + headers, then the body, as two socket writes. On loopback
and small responses each write is a full TCP send that wakes the client (measured in
benchmarks/RESULTS.md, "A leaner /tag request path"). Holding the head until the body's
first write (or the end of the current loop iteration, whichever comes first) makes it one,
without changing what is sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

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


def coalescing_protocol() -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with coalesced writes; None (uvicorn's default) when
    httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            wrapped: Any = CoalescingTransport(transport, self.loop)
            super().connection_made(wrapped)

    return CoalescingHttpToolsProtocol
