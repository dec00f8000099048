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
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    header_name = bytearray()
    header_value = bytearray()
    current: Part | None = None

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal current
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartError("a multipart part lacks 'Content-Disposition: form-data; name'")
        if len(parts) >= MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} multipart parts")
        filename = options.get(b"filename")
        current = Part(
            options[b"name"].decode("utf-8", "replace"),
            filename.decode("utf-8", "replace") if filename is not None else None,
        )
        parts.append(current)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current is not None:
            current.data.extend(data[start:end])

    def on_part_end() -> None:
        if current is not None:
            current.complete = True

    callbacks = {
        "on_part_end": on_part_end,
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise MultipartError(f"malformed multipart body: {e}") from None
    return [p for p in parts if p.complete]
