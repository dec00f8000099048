"""Admission happens when a request arrives, before its body: a request let in keeps its
queue slot through a slow upload, and the next one is refused at once (real server)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from mltag_artifact import Artifact
from tests.images import RED, solid

from .live import in_flight, live_server, read_response


def test_admitted_request_keeps_its_slot_through_a_slow_upload(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    image = solid(RED)
    env = {
        "MLTAG_ARTIFACT_DIR": str(demo_artifact.directory),
        "MLTAG_MAX_QUEUE_SIZE": "1",
        "MLTAG_MAX_BATCH_SIZE": "1",
        "MLTAG_MAX_IMAGES_PER_REQUEST": "1",
    }
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"POST /tag HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image)}\r\n\r\n"
        ).encode()
        slow.sendall(head + image[:10])  # the upload starts, then stalls
        deadline = time.monotonic() + 10
        while in_flight(server.url) < 1:
            assert time.monotonic() < deadline, "the slow request never arrived"
            time.sleep(0.01)

        t0 = time.monotonic()
        refused = httpx.post(server.url + "/tag", content=image,
                             headers={"content-type": "image/png"})  # fmt: skip
        refused_in = time.monotonic() - t0
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused_in < 1.0

        slow.sendall(image[10:])  # the admitted request completes: never refused late
        status, body = read_response(slow)
        slow.close()
        assert status == 200, body
        again = httpx.post(server.url + "/tag", content=image,
                           headers={"content-type": "image/png"})  # fmt: skip
        assert again.status_code == 200  # the slot was given back


def _start_upload(port: int, image: bytes, sent: int) -> socket.socket:
    """A POST /tag whose body stops after `sent` bytes (the rest may follow later)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /tag HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\n\r\n"
    ).encode()
    sock.sendall(head + image[:sent])
    return sock


def test_slow_uploads_cannot_lock_out_normal_clients(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Twice the queue size of connections trickling their bodies: normal clients keep being
    served (uploads hold at most half the queue), and the trickling ones get 408 once their
    rate is below the minimum after the grace period."""
    image = solid(RED)
    env = {
        "MLTAG_ARTIFACT_DIR": str(demo_artifact.directory),
        "MLTAG_MAX_QUEUE_SIZE": "8",
        "MLTAG_MAX_BATCH_SIZE": "4",
        "MLTAG_MAX_IMAGES_PER_REQUEST": "4",
        "MLTAG_UPLOAD_GRACE_S": "1",
    }
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        slow = [_start_upload(server.port, image, 10) for _ in range(16)]
        deadline = time.monotonic() + 10
        while in_flight(server.url) < 16:
            assert time.monotonic() < deadline, "the slow requests never arrived"
            time.sleep(0.01)
        statuses = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(20):
                r = client.post("/tag", content=image, headers={"content-type": "image/png"})
                statuses.append(r.status_code)
        assert statuses == [200] * 20
        t0 = time.monotonic()
        answers = [read_response(sock) for sock in slow]  # 1 s grace + one rate check
        assert time.monotonic() - t0 < 5
        for sock in slow:
            sock.close()
    assert {status for status, _ in answers} == {408}
    assert all(b"slower than 4096 bytes/s" in body for _, body in answers)


def test_the_upload_budget_refuses_new_bodies_when_full(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    big = bytes(1_100_000)  # not an image; only its arrival matters
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_MAX_UPLOAD_MB_IN_FLIGHT": "1"}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        holding = _start_upload(server.port, big + b"x", len(big))  # 1.05 MiB in, 1 byte to go
        deadline = time.monotonic() + 10
        refused = None
        while time.monotonic() < deadline:
            refused = httpx.post(server.url + "/tag", content=solid(RED),
                                 headers={"content-type": "image/png"})  # fmt: skip
            if refused.status_code == 429:
                break
            time.sleep(0.05)
        assert refused is not None and refused.status_code == 429, refused.text if refused else ""
        assert refused.json()["error"]["code"] == "uploads_full"
        assert refused.headers["retry-after"] == "1"
        holding.sendall(b"x")
        status, _ = read_response(holding)
        holding.close()
        assert status == 422  # the body arrived (and is not an image)
        ok = httpx.post(server.url + "/tag", content=solid(RED),
                        headers={"content-type": "image/png"})  # fmt: skip
        assert ok.status_code == 200  # the budget is free again


def test_a_client_timeout_is_504_at_every_stage(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """timeout_ms in the query string, body still arriving: 504 as for a JSON timeout_ms (the
    server's own body deadline stays 408)."""
    image = solid(RED)
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory)}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"POST /tag?timeout_ms=300 HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image)}\r\n\r\n"
        ).encode()
        sock.sendall(head + image[:10])
        status, body = read_response(sock)
        sock.close()
    assert status == 504, body
    assert b"deadline_exceeded" in body
