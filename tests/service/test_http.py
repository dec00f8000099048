"""The response-coalescing transport: a head goes out with its body, in order, never lost."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mltag_artifact import Artifact
from service.http import CoalescingTransport, coalescing_protocol
from tests.images import RED, solid

from .live import live_server, read_response

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def _run(body: Callable[[CoalescingTransport, FakeTransport], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeTransport()
        await body(CoalescingTransport(fake, asyncio.get_running_loop()), fake)  # type: ignore[arg-type]

    asyncio.run(main())


def test_head_and_body_go_out_in_one_write() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(HEAD)
        assert fake.writes == []
        t.write(b"ok")
        assert fake.writes == [HEAD + b"ok"]
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
        assert fake.writes == [HEAD + b"ok"]

    _run(body)


def test_a_head_without_a_body_is_sent_on_the_next_loop_iteration() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(HEAD)
        await asyncio.sleep(0)
        assert fake.writes == [HEAD]

    _run(body)


def test_other_data_is_written_at_once_and_close_flushes_first() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(b"chunk")
        assert fake.writes == [b"chunk"]
        t.write(HEAD)
        t.close()
        assert fake.writes == [b"chunk", HEAD] and fake.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest: the transport's

    _run(body)


def test_nothing_is_written_to_a_closing_or_aborted_transport() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(HEAD)
        fake.closed = True  # the client went away before the loop came round
        await asyncio.sleep(0)
        assert fake.writes == []
        t.write(HEAD)
        t.abort()
        await asyncio.sleep(0)
        assert fake.writes == [] and fake.aborted

    _run(body)


def test_the_real_server_answers_whole_responses_on_a_kept_alive_connection(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert coalescing_protocol() is not None  # httptools ships with uvicorn[standard]
    image = solid(RED)
    tag = (
        f"POST /tag HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\n\r\n"
    ).encode() + image
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory)}
    with (
        live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        for _ in range(3):
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
            sock.sendall(tag)
            status, body = read_response(sock)
            assert status == 200, body
            assert json.loads(body)["results"][0]["tags"][0]["label"] == "red"
