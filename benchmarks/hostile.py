"""Hostile-traffic benchmark: the real service (`python -m service`, default settings, the
bundled model) under attack while a normal client keeps tagging photos.

    .venv/bin/python benchmarks/hostile.py [--phase-s 15] [--quick]

Phases, one after the other: no attack (baseline); slow uploads (twice the queue size of
connections sending their bodies at 1 byte/s, reconnecting when cut off); header trickle (as
many connections sending a header line a second); huge headers (30 MB of one header,
repeatedly); decode bombs (requests of 16 high-bit-depth 6300x6300 PNGs, and 1x39,000,000
images); huge JSON (13.6 MiB bodies with 900k threshold keys). For each phase it prints the
normal client's success rate and latency, /livez latency (probed every 20 ms), the server's
peak RSS and the 5xx answers other than the documented 503 (draining) and 504 (deadline).
Then, in fresh processes, the peak memory of decoding single hostile images against their
8-bit size, and how long a drain with decodes running takes to exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import ROOT, Server, _read_response, pct, photo_like_jpeg, start_server

QUEUE = 256  # the service's default MLTAG_MAX_QUEUE_SIZE
PHASES = (
    "baseline", "slow uploads", "header trickle", "huge headers", "decode bombs", "huge JSON"
)  # fmt: skip


# ----------------------------------------------------------------------------- inputs
def grey16_bomb(side: int = 6300) -> bytes:
    """~80 KB on the wire, 40 Mpx of 16-bit grey once decoded."""
    a = np.zeros((side, side), dtype=np.uint16)
    a[::7] = 40_000
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def sliver(length: int = 39_000_000) -> bytes:
    """A real 1 x 39,000,000 PNG: slow to decode, useless to a model."""
    buf = io.BytesIO()
    Image.new("L", (length, 1)).save(buf, "PNG")
    return buf.getvalue()


def multipart(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def huge_json(photo: bytes, keys: int = 900_000) -> bytes:
    import base64

    thresholds = {f"x{i:06d}": 0.5 for i in range(keys)}  # 13.6 MiB in all
    doc = {"images": [{"b64": base64.b64encode(photo).decode()}], "thresholds": thresholds}
    return json.dumps(doc).encode()


def post(path: str, body: bytes, ctype: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: hostile\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# ----------------------------------------------------------------------------- recording
@dataclass
class Phase:
    name: str
    normal: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    livez: list[float] = field(default_factory=list)
    attack: Counter[int] = field(default_factory=Counter)  # statuses the attackers got
    rss_peak_mb: float = 0.0


def rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


# ----------------------------------------------------------------------------- clients
async def normal_client(port: int, photo: bytes, phase: Phase, stop: float) -> None:
    """Two keep-alive connections tagging a 640x480 photo back to back."""

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                writer.write(post("/tag", photo, "image/jpeg"))
                status, _ = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                status = 0  # the connection failed: a failure for this client
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            phase.normal.append((status, time.monotonic() - t0))
        writer.close()

    await asyncio.gather(one(), one())


async def livez_probe(port: int, phase: Phase, stop: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < stop:
        t0 = time.monotonic()
        writer.write(b"GET /livez HTTP/1.1\r\nHost: probe\r\n\r\n")
        await _read_response(reader)
        phase.livez.append(time.monotonic() - t0)
        await asyncio.sleep(0.02)
    writer.close()


async def connection_loop(
    port: int, stop: float, phase: Phase, attack: Callable[[asyncio.StreamWriter], Awaitable[None]]
) -> None:
    """One attacking connection, reopened whenever the server cuts it off."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        answer = asyncio.ensure_future(_read_response(reader))
        sender = asyncio.ensure_future(attack(writer))
        done, _ = await asyncio.wait({answer, sender}, timeout=max(0.0, stop - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if answer in done and answer.exception() is None:
            phase.attack[answer.result()[0]] += 1
        for task in (answer, sender):
            task.cancel()
        writer.close()


def trickle_body(size: int = 100_000) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def attack(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"POST /tag HTTP/1.1\r\nHost: h\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        for _ in range(size):
            await asyncio.sleep(1.0)
            writer.write(b"\xff")
            await writer.drain()

    return attack


async def trickle_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"POST /tag HTTP/1.1\r\n")
    for i in range(100_000):
        await asyncio.sleep(1.0)
        writer.write(f"X-Trickle-{i}: {i}\r\n".encode())
        await writer.drain()


async def huge_header(writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /labels HTTP/1.1\r\nHost: h\r\nX-Huge: ")
    chunk = b"a" * 65536
    for _ in range(30 * 16):  # 30 MB
        writer.write(chunk)
        await writer.drain()


def repeated_requests(body: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def attack(writer: asyncio.StreamWriter) -> None:
        writer.write(body)
        await writer.drain()
        await asyncio.sleep(3600)  # wait for the answer (read by connection_loop)

    return attack


# ----------------------------------------------------------------------------- phases
async def run_phase(
    server: Server,
    photo: bytes,
    phase: Phase,
    seconds: float,
    attackers: list[Coroutine[Any, Any, None]],
) -> None:
    stop = time.monotonic() + seconds
    sampling = True

    def sample() -> None:
        while sampling:
            phase.rss_peak_mb = max(phase.rss_peak_mb, rss_mb(server.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        await asyncio.gather(
            normal_client(server.port, photo, phase, stop),
            livez_probe(server.port, phase, stop),
            *attackers,
        )
    finally:
        sampling = False
        sampler.join()


def attacks(
    port: int, seconds: float, phase: Phase, name: str, inputs: dict[str, bytes]
) -> list[Coroutine[Any, Any, None]]:
    stop = time.monotonic() + seconds
    loop = lambda attack, n: [connection_loop(port, stop, phase, attack) for _ in range(n)]  # noqa: E731
    if name == "slow uploads":
        return loop(trickle_body(), 2 * QUEUE)
    if name == "header trickle":
        return loop(trickle_headers, 2 * QUEUE)
    if name == "huge headers":
        return loop(huge_header, 10)
    if name == "decode bombs":
        return loop(repeated_requests(inputs["bombs"]), 4) + loop(
            repeated_requests(inputs["sliver"]), 2
        )
    if name == "huge JSON":
        return loop(repeated_requests(inputs["json"]), 2)
    return []


def row(phase: Phase) -> str:
    statuses = [s for s, _ in phase.normal]
    ok = [t for s, t in phase.normal if s == 200]
    success = 100 * len(ok) / max(1, len(statuses))
    bad_5xx = sum(n for s, n in phase.attack.items() if s >= 500 and s not in (503, 504))
    bad_5xx += sum(1 for s in statuses if s >= 500 and s not in (503, 504))
    attack = ", ".join(f"{s}: {n}" for s, n in sorted(phase.attack.items())) or "-"
    livez_max = max(phase.livez, default=float("nan")) * 1000
    return (
        f"| {phase.name} | {len(statuses)} | {success:.1f}% | {pct(ok, 50):.0f} "
        f"| {pct(ok, 99):.0f} | {pct(phase.livez, 99):.1f} | {livez_max:.1f} "
        f"| {phase.rss_peak_mb:.0f} | {bad_5xx} | {attack} |"
    )


# ----------------------------------------------------------------------------- single images
# Peak RSS from VmHWM (reset by exec; getrusage's ru_maxrss keeps the parent's peak).
_PEAK = """
import re, sys, time
from pathlib import Path
from mltag_artifact import load_artifact
from mltag_artifact.preprocess import DecodeLimits, preprocess
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
prep = load_artifact(sys.argv[1]).manifest.preprocessing
data = open(sys.argv[2], "rb").read()
limits = DecodeLimits(max_pixels=40_000_000, max_side=16_384, max_aspect_ratio=50)
preprocess(open(sys.argv[3], "rb").read(), prep, limits)  # warm: imports, first allocations
before = hwm()
t0 = time.perf_counter()
try:
    preprocess(data, prep, limits)
    outcome = "ok"
except Exception as e:
    outcome = type(e).__name__
print(outcome, (hwm() - before) / 1024, time.perf_counter() - t0)
"""


def single_images(artifact: Path, work: Path) -> None:
    cases = {
        "16-bit grey PNG 6300x6300": grey16_bomb(),
        "8-bit RGB PNG 6000x6000": _encode(Image.new("RGB", (6000, 6000), (9, 80, 200)), "PNG"),
        "palette PNG 6000x6000": _encode(Image.new("P", (6000, 6000), 3), "PNG"),
        "grey + alpha PNG 6000x6000": _encode(Image.new("LA", (6000, 6000), (90, 128)), "PNG"),
        "CMYK JPEG 6000x6000": _encode(Image.new("CMYK", (6000, 6000), (0, 80, 200, 10)), "JPEG"),
        "1 x 39,000,000 PNG": sliver(),
    }
    small = work / "small.jpg"
    small.write_bytes(photo_like_jpeg(640, 480, 1))
    print("\n## Decoding one hostile image (fresh process each)")
    print("| image | bytes | outcome | seconds | peak RSS MB | 8-bit RGB size MB | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, data in cases.items():
        path = work / "case.bin"
        path.write_bytes(data)
        command = [sys.executable, "-c", _PEAK, str(artifact), str(path), str(small)]
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
        out = run.stdout.split()
        im = Image.open(io.BytesIO(data))
        rgb_mb = im.width * im.height * 3 / 2**20
        peak = float(out[1])
        print(f"| {name} | {len(data)} | {out[0]} | {float(out[2]):.2f} | {peak:.0f} | "
              f"{rgb_mb:.0f} | {peak / rgb_mb:.2f} |")  # fmt: skip


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def drain_exit(artifact: Path, bombs: bytes, port: int, drain_s: float = 2.0) -> float:
    server, _ = start_server(artifact, port, drain_timeout_s=str(drain_s))

    def load() -> None:
        async def main() -> None:
            stop = time.monotonic() + 30
            phase = Phase("drain")
            await asyncio.gather(*(connection_loop(port, stop, phase, repeated_requests(bombs))
                                   for _ in range(6)))  # fmt: skip

        with contextlib.suppress(Exception):  # the server goes away under it: expected
            asyncio.run(main())

    threading.Thread(target=load, daemon=True).start()
    time.sleep(3)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(60)
    return time.monotonic() - t0


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--phase-s", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="3 s phases, for a smoke test")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    parser.add_argument("--no-extras", action="store_true", help="skip single images and drain")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.phase_s
    photo = photo_like_jpeg(640, 480, 0)
    bombs = grey16_bomb()
    body, ctype = multipart([(f"{i}.png", bombs) for i in range(16)])
    inputs = {
        "bombs": post("/tag", body, ctype),
        "sliver": post("/tag", sliver(), "image/png"),
        "json": post("/tag", huge_json(photo), "application/json"),
    }
    print(f"# huge JSON body: {len(inputs['json']) / 2**20:.1f} MiB; bomb request: "
          f"{len(body) / 2**20:.1f} MiB of 16 x {len(bombs) / 1024:.0f} KB PNGs")  # fmt: skip
    server, _ = start_server(args.artifact, args.port)
    print(
        f"# server idle RSS {rss_mb(server.proc.pid):.0f} MB; {seconds:.0f} s per phase; "
        f"queue {QUEUE}; attackers run in this process"
    )
    print("\n## Under attack (normal client: 2 connections tagging a 640x480 JPEG)")
    print(
        "| phase | normal requests | normal success | p50 ms | p99 ms | /livez p99 ms | "
        "/livez max ms | server peak RSS MB | 5xx (not 503/504) | attackers got |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        for name in args.phases.split(","):
            phase = Phase(name)
            asyncio.run(run_phase(server, photo, phase, seconds,
                                  attacks(args.port, seconds, phase, name, inputs)))  # fmt: skip
            print(row(phase), flush=True)
            time.sleep(1.0)
        alive = server.proc.poll() is None
    finally:
        server.proc.terminate()
        server.proc.wait(60)
    print(f"\n# server alive after every phase: {alive}")
    if args.no_extras:
        return
    work = ROOT / "build" / "hostile"
    work.mkdir(parents=True, exist_ok=True)
    single_images(args.artifact, work)
    exit_s = drain_exit(args.artifact, inputs["bombs"], args.port + 1)
    print(
        f"\n# drain: MLTAG_DRAIN_TIMEOUT_S=2 with decode bombs running: exited "
        f"{exit_s:.1f} s after SIGTERM (target <= 4 s)"
    )


if __name__ == "__main__":
    main()
