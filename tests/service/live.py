"""Start the real `mltag-serve` process on a free loopback port (as a user or container would)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def live_server(
    command: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    timeout_s: float = 30.0,
    unset: Sequence[str] = (),
) -> Iterator[LiveServer]:
    """Run `python -m service` (or `command`) with MLTAG_PORT set (and the `unset` variables
    removed from this process's environment); wait for /readyz."""
    port = free_port()
    full_env = {**os.environ, "MLTAG_HOST": "127.0.0.1", "MLTAG_PORT": str(port), **(env or {})}
    for name in unset:
        full_env.pop(name, None)
    log_path = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"mltag-serve-{port}.log"
    cmd = command or [sys.executable, "-m", "service"]
    with log_path.open("wb") as log:
        # Its own process group: a wrapper (strace) killed alone would leave the service running.
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LiveServer(proc, f"http://127.0.0.1:{port}", port, log_path)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout_s} s:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole tree, even if the leader exited
        proc.wait(10)


def in_flight(url: str) -> float:
    """The service's `mltag_requests_in_flight` gauge."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("mltag_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole HTTP/1.1 response (Content-Length framed) from a raw socket: status, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body
