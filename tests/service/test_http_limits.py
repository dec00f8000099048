"""HTTP limits before a request reaches the app, on the real `mltag-serve` process: header
size per line and in total, time to send the headers, open connections, keep-alive."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltag_artifact import Artifact

from .live import LiveServer, live_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {
        "MLTAG_ARTIFACT_DIR": str(demo_artifact.directory),
        "MLTAG_HEADER_TIMEOUT_S": "1",
        "MLTAG_MAX_CONNECTIONS": "8",
        "MLTAG_KEEP_ALIVE_TIMEOUT_S": "1",
    }
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def send_until_closed(sock: socket.socket, chunks: Iterator[bytes], pause_s: float = 0.0) -> int:
    """Send chunks until the server closes the connection; the bytes sent by then."""
    sent = 0
    try:
        for chunk in chunks:
            time.sleep(pause_s)
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the server answered and closed
        return sent
    raise AssertionError("the server never closed the connection")


def error_of(response: bytes) -> tuple[int, dict[str, str]]:
    head, body = response.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)["error"]


def test_a_huge_header_is_431_and_closed_without_reading_it_all(server: LiveServer) -> None:
    sock = connect(server)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = send_until_closed(sock, (b"a" * 65536 for _ in range(480)))  # 30 MiB
    assert sent < 4 * 2**20, f"the server read {sent} bytes of one header"
    status, error = error_of(read_all(sock))
    assert status == 431 and error["code"] == "headers_too_large"


@pytest.mark.parametrize(
    ("request_head", "message"),
    [
        (b"GET /livez HTTP/1.1\r\nX-Long: " + b"a" * 9_000 + b"\r\n\r\n", "a header is over"),
        (b"GET /livez?" + b"q" * 9_000 + b" HTTP/1.1\r\n\r\n", "the request line is over"),
        (b"GET /livez HTTP/1.1\r\n" + b"X-A: " + b"a" * 7_000 + b"\r\n" + b"X-B: "
         + b"b" * 7_000 + b"\r\nX-C: " + b"c" * 7_000 + b"\r\n\r\n", "headers are over 16384"),
    ],
    ids=["one header", "request line", "total"],
)  # fmt: skip
def test_header_limits_are_431(server: LiveServer, request_head: bytes, message: str) -> None:
    sock = connect(server)
    sock.sendall(request_head)
    status, error = error_of(read_all(sock))
    assert status == 431 and message in error["message"]


def test_headers_trickled_slower_than_the_timeout_are_408(server: LiveServer) -> None:
    sock = connect(server)
    t0 = time.monotonic()
    sock.sendall(b"GET /livez HTTP/1.1\r\n")
    lines = (f"X-{i}: {i}\r\n".encode() for i in range(20))  # one per 0.3 s: 6 s in all
    send_until_closed(sock, lines, pause_s=0.3)
    response = read_all(sock)
    assert time.monotonic() - t0 < 3
    status, error = error_of(response)
    assert status == 408 and "did not arrive within 1 s" in error["message"]


def test_a_silent_connection_is_closed_after_the_header_timeout(server: LiveServer) -> None:
    sock = connect(server)
    t0 = time.monotonic()
    status, _ = error_of(read_all(sock))
    assert status == 408 and 0.8 < time.monotonic() - t0 < 3


def test_connections_beyond_the_limit_get_503_and_close(server: LiveServer) -> None:
    held = [connect(server) for _ in range(8)]
    try:
        time.sleep(0.2)
        extra = connect(server)
        status, error = error_of(read_all(extra))
        assert status == 503 and error["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    ok = connect(server)
    ok.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.recv(65536).startswith(b"HTTP/1.1 200")


def test_idle_keep_alive_connections_close(server: LiveServer) -> None:
    sock = connect(server)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    assert sock.recv(65536) == b""  # closed by the server
    assert 0.5 < time.monotonic() - t0 < 3


def test_limits_are_settings(tmp_path: Path) -> None:
    from service.cli import http_limits, settings_from_args

    limits = http_limits(
        settings_from_args(["--max-header-bytes", "4096", "--max-connections", "3"])
    )
    assert limits.max_header_bytes == 4096 and limits.max_connections == 3
