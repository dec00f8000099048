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
