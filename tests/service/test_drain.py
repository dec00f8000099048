"""Graceful shutdown of the real process: SIGTERM -> stop admitting, finish, exit 0."""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mltag_artifact import Artifact
from service.drain import CONNECTION_GRACE_S
from tests.images import RED, solid

from .live import in_flight, live_server, read_response

pytestmark = pytest.mark.integration

N_ACCEPTED = 24


def test_sigterm_finishes_every_accepted_request(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A long batching delay holds every request in the queue: all are accepted, none done.
    image = solid(RED)
    env = {
        "MLTAG_ARTIFACT_DIR": str(demo_artifact.directory),
        "MLTAG_MAX_BATCH_SIZE": "64",
        "MLTAG_BATCH_TUNING": "false",  # batches of up to 64, not the measured best size
        "MLTAG_MAX_DELAY_MS": "1500",
        "MLTAG_DRAIN_TIMEOUT_S": "60",
    }
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        url = server.url

        def tag() -> int:
            with httpx.Client(timeout=60) as c:
                r = c.post(url + "/tag", content=image, headers={"content-type": "image/png"})
                return r.status_code

        with ThreadPoolExecutor(N_ACCEPTED) as pool:
            futures = [pool.submit(tag) for _ in range(N_ACCEPTED)]
            deadline = time.monotonic() + 20
            while in_flight(url) < N_ACCEPTED:  # every request accepted and in progress
                assert time.monotonic() < deadline, "requests never all got in flight"
                time.sleep(0.005)
            server.process.send_signal(signal.SIGTERM)
            try:
                while (ready := httpx.get(url + "/readyz")).status_code == 200:  # handled?
                    assert time.monotonic() < deadline, "SIGTERM never started the drain"
                    time.sleep(0.005)
                late = httpx.post(url + "/tag", content=image,
                                  headers={"content-type": "image/png"})  # fmt: skip
            except httpx.ConnectError:  # a very busy machine: the drain already ended
                ready = late = None
            statuses = [f.result() for f in futures]
        if late is not None and ready is not None:  # seen during the drain
            assert late.status_code == 503
            assert late.json()["error"]["code"] == "draining"
            assert ready.status_code == 503
            assert ready.json() == {"status": "draining"}
        assert statuses == [200] * N_ACCEPTED, statuses  # nothing accepted was lost
        assert server.process.wait(30) == 0
        assert "draining" in server.log()


def _metric(url: str, name: str) -> float:
    """The sum of a metric's series (they carry model and version labels)."""
    lines = httpx.get(url + "/metrics").text.splitlines()
    values = [
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + " ", name + "{"))
    ]
    if not values:
        raise AssertionError(name)
    return sum(values)


def test_client_gone_is_not_computed_and_logs_are_json(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "MLTAG_ARTIFACT_DIR": str(demo_artifact.directory),
        "MLTAG_MAX_BATCH_SIZE": "8",
        "MLTAG_BATCH_TUNING": "false",
        "MLTAG_MAX_DELAY_MS": "800",
        "MLTAG_LOG_FORMAT": "json",
    }
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        body = solid(RED)
        head = (
            f"POST /tag HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"X-Request-ID: gone-1\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body)
            time.sleep(0.3)  # decoded and queued; the batch waits for the 800 ms delay
        time.sleep(1.2)  # the batch would have run by now
        assert _metric(server.url, 'mltag_requests_rejected_total{reason="client_gone"}') == 1
        assert _metric(server.url, "mltag_batch_size_count") == 0  # nothing computed
        r = httpx.post(server.url + "/tag", content=body, headers={"content-type": "image/png"})
        assert r.status_code == 200
        assert _metric(server.url, "mltag_batch_size_sum") == 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    access = [r for r in records if r["logger"] == "mltag.access"]
    assert any(r.get("request_id") == "gone-1" for r in access)
    assert {"time", "level", "message"} <= set(access[0])


def _slow_server_env(artifact: Artifact, drain_timeout: str) -> dict[str, str]:
    # A 5 s batching delay keeps accepted requests in flight (their deadline is 30 s away).
    return {
        "MLTAG_ARTIFACT_DIR": str(artifact.directory),
        "MLTAG_MAX_BATCH_SIZE": "64",
        "MLTAG_BATCH_TUNING": "false",
        "MLTAG_MAX_DELAY_MS": "5000",
        "MLTAG_DRAIN_TIMEOUT_S": drain_timeout,
    }


def test_drain_timeout_bounds_shutdown_and_answers_json(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = _slow_server_env(demo_artifact, "1")
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post, server.url + "/tag", content=solid(RED),
                headers={"content-type": "image/png"}, timeout=30,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while in_flight(server.url) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            t0 = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(10) == 0
            stopped_in = time.monotonic() - t0
            r = pending.result()
        assert stopped_in < 3.5  # 1 s drain + 1 s grace, not drain + uvicorn's own wait
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "draining"


def test_drain_answers_connections_still_sending_their_request(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A client that connected before the drain ended and sends its request (or the rest of
    its headers) just after gets a 503 `draining`, not a closed connection; a connection that
    never sends anything holds the exit back by CONNECTION_GRACE_S at most."""
    image = solid(RED)
    request = (
        b"POST /tag HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {len(image)}\r\n\r\n".encode()
        + image
    )
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_DRAIN_TIMEOUT_S": "30"}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        address = ("127.0.0.1", server.port)
        with (
            socket.create_connection(address, timeout=10) as fresh,  # connected, nothing sent
            socket.create_connection(address, timeout=10) as partial,
            socket.create_connection(address, timeout=10) as silent,  # never sends
        ):
            partial.sendall(request[:20])  # the request line, partly
            time.sleep(0.3)  # all three accepted by the server
            t0 = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while True:  # the drain finds nothing in flight and stops listening
                try:
                    socket.create_connection(address, timeout=2).close()
                except ConnectionRefusedError:
                    break
                assert time.monotonic() < deadline, "the server kept listening"
                time.sleep(0.05)
            fresh.sendall(request)
            partial.sendall(request[20:])
            answers = [read_response(fresh), read_response(partial)]
            assert server.process.wait(10) == 0
            stopped_in = time.monotonic() - t0
            assert silent.recv(1) == b""  # closed at the end, unanswered: it asked nothing
    for status, body in answers:
        assert status == 503, body
        assert json.loads(body)["error"]["code"] == "draining"
    assert stopped_in < CONNECTION_GRACE_S + 2.5, stopped_in


def test_second_signal_exits_at_once(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = _slow_server_env(demo_artifact, "60")
    logs = tmp_path_factory.mktemp("logs")
    with live_server(env=env, log_dir=logs) as server, ThreadPoolExecutor(1) as pool:
        pool.submit(
            httpx.post, server.url + "/tag", content=solid(RED),
            headers={"content-type": "image/png"}, timeout=30,
        )  # fmt: skip
        while in_flight(server.url) < 1:
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert server.process.poll() is None  # draining, waiting for the request
        t0 = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(5) == 1
        assert time.monotonic() - t0 < 1.0


def test_disconnect_mid_upload_is_not_a_server_error(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory)}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        head = (
            b"POST /tag HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + solid(RED)[:100])
            time.sleep(0.2)
        time.sleep(0.3)
        text = httpx.get(server.url + "/metrics").text
        assert 'status_class="5xx"' not in text
        assert 'mltag_requests_rejected_total{reason="client_gone"} 1.0' in text
        assert "Traceback" not in server.log()


def test_drain_timeout_with_decodes_running_exits_on_time_and_cleanly(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Decodes still running at the drain timeout are abandoned, not waited for: the process
    exits within the drain timeout + 2 s, every request gets a JSON answer, and the log holds
    no ERROR, traceback or "exception was never retrieved"."""
    import numpy as np
    from PIL import Image

    from tests.images import encode

    big = np.zeros((4_000, 4_000), dtype=np.uint16)
    big[::5] = 50_000
    image = encode(Image.fromarray(big), "PNG")  # 16-bit: a few tenths of a second each
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_DRAIN_TIMEOUT_S": "1"}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:

        def tag() -> httpx.Response:
            files = [("image", (f"{i}.png", image, "image/png")) for i in range(16)]
            return httpx.post(server.url + "/tag", files=files, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(tag) for _ in range(6)]
            deadline = time.monotonic() + 20
            while in_flight(server.url) < 6:
                assert time.monotonic() < deadline, "requests never all got in flight"
                time.sleep(0.01)
            time.sleep(0.5)  # decoding now
            t0 = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(15) == 0
            stopped_in = time.monotonic() - t0
            responses = [f.result() for f in futures]
        log = server.log()
    assert stopped_in < 1 + 2, f"exited {stopped_in:.1f} s after SIGTERM"
    assert all(r.status_code in (200, 503) for r in responses)
    assert all(r.json()["error"]["code"] == "draining" for r in responses if r.status_code == 503)
    for bad in (" ERROR ", "Traceback", "never retrieved"):
        assert bad not in log, log
