"""multipart/form-data from a body already in memory, parsed in the worker pool.

Starlette parses a form on the event loop as the body streams in (~150 ms of loop time for
a 19 MiB body here) and spools parts over 1 MB to temporary files. The body is bounded
(MLTAG_MAX_BODY_BYTES) and held in memory anyway, so parse it in one pass off the loop, keep
the parts as bytes and need no temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 1000


class MultipartError(ValueError):
    """The body is not valid multipart/form-data (the message says why)."""


@dataclass
class Part:
    name: str
    filename: str | None  # None: a plain text field, not a file
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False  # its closing boundary arrived


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Every complete part of a multipart/form-data body, in order (a part cut off by the end
    of the body is dropped, as Starlette's parser does)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart Content-Type has no boundary")
    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise MultipartError(f"malformed multipart body: {e}") from None
    return [p for p in collector.parts if p.complete]


class _Collector:
    """python-multipart's callbacks, collecting parts and their headers."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self._headers: dict[bytes, bytes] = {}
        self._name = bytearray()
        self._value = bytearray()
        self._current: Part | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda d, a, b: self._name.extend(d[a:b]),
            "on_header_value": lambda d, a, b: self._value.extend(d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
        }

    def _header_end(self) -> None:
        self._headers[bytes(self._name).lower()] = bytes(self._value)
        self._name.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartError("a multipart part lacks 'Content-Disposition: form-data; name'")
        if len(self.parts) >= MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} multipart parts")
        filename = options.get(b"filename")
        self._current = Part(
            options[b"name"].decode("utf-8", "replace"),
            filename.decode("utf-8", "replace") if filename is not None else None,
        )
        self.parts.append(self._current)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.data.extend(data[start:end])

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.complete = True
