"""multipart/form-data parsed from memory in the worker pool: the same parts Starlette's own
parser finds, no temporary files, no event-loop time proportional to the body."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from service.api.multipart import MAX_PARTS, MultipartError, parse_multipart
from tests.images import RED, solid

from .conftest import ClientFactory

BOUNDARY = "b0undary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body_of(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def starlette_parts(body: bytes) -> list[tuple[str, str | None, bytes]]:
    async def parse() -> list[tuple[str, str | None, bytes]]:
        async def stream() -> Any:
            yield body

        form = await MultiPartParser(Headers({"content-type": CTYPE}), stream()).parse()
        out = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                out.append((name, value.filename, await value.read()))
            else:
                out.append((name, None, value.encode()))
        return out

    return asyncio.run(parse())


def test_same_parts_as_starlette() -> None:
    parts = [
        ("image", "a.png", os.urandom(3000)),
        ("note", None, b"plain text"),
        ("image", "ünïcode.jpg", b"\r\n--b0und" + os.urandom(100)),  # looks like a boundary
        ("image", "empty.png", b""),
    ]
    body = body_of(parts)
    got = [(p.name, p.filename, bytes(p.data)) for p in parse_multipart(body, CTYPE)]
    assert got == starlette_parts(body) == parts


def test_malformed_bodies_are_errors_not_crashes() -> None:
    with pytest.raises(MultipartError, match="no boundary"):
        parse_multipart(b"x", "multipart/form-data")
    with pytest.raises(MultipartError, match="Content-Disposition"):
        parse_multipart(f"--{BOUNDARY}\r\nX: y\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), CTYPE)
    many = body_of([("f", None, b"")] * (MAX_PARTS + 1))
    with pytest.raises(MultipartError, match=f"more than {MAX_PARTS}"):
        parse_multipart(many, CTYPE)
    truncated = body_of([("image", "a", b"abc")])[:-20]
    assert parse_multipart(truncated, CTYPE) == []  # an unfinished part is dropped


def test_uploads_need_no_temp_dir_and_parse_off_the_loop(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 2 MB multipart upload (Starlette spooled parts over 1 MB to disk) works with no usable
    temporary directory, and is parsed in the worker pool."""
    import service.api.tag as tag_module

    threads: list[str] = []
    real = tag_module.parse_multipart

    def spy(body: bytes, content_type: str) -> Any:
        threads.append(threading.current_thread().name)
        return real(body, content_type)

    monkeypatch.setattr(tag_module, "parse_multipart", spy)
    big = solid(RED, size=(1400, 1000), fmt="BMP")  # 4 MB, uncompressed
    assert len(big) > 2**20
    with make_client() as client:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
        r = client.post("/tag", files=[("image", ("big.bmp", big, "image/bmp"))])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["tags"][0]["label"] == "red"
    assert threads and threads[0].startswith("mltag-decode")
