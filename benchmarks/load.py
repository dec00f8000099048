"""Load benchmark: the real service on loopback vs the ideal in-process pipeline, same run.

    .venv/bin/python benchmarks/load.py [--artifact DIR] [--duration 15] [--quick]
    .venv/bin/python benchmarks/load.py --compare decode_nice=5,15     # A/B a setting
    .venv/bin/python benchmarks/load.py --baseline /tmp/base           # A/B a code change

Measures, in one run on this machine:
  * reference: single-thread decode + resize per image (each size), model time at batch 1,
    and the ideal pipeline (decode threads + ONNX Runtime at the best batch size, no HTTP);
  * the service (`python -m service`, one process) driven by a closed-loop client at several
    concurrencies with real JPEGs: throughput, p50/p95/p99 latency, errors and 429s, mean
    batch size (from /metrics), server CPU and RSS; batching on vs off (max batch 1);
  * overload: an open-loop client at 4x the measured capacity; 429 latency and RSS drift.
The client is asyncio over raw sockets (keep-alive, ~0.1 ms CPU per request) in this process;
the server is a separate process. Both share the machine's cores, as a sidecar client would.
Without --artifact it serves models/default, else builds the Lite0 stand-in
(benchmarks/standin_artifact.py; needs the train extra).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mltag_artifact import load_artifact  # noqa: E402
from mltag_artifact.preprocess import preprocess  # noqa: E402
from mltag_artifact.runner import ModelRunner, available_cores  # noqa: E402
from service.tuning import tune_malloc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ideal import run_full_batches  # noqa: E402

SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}


# ----------------------------------------------------------------------------- inputs
def photo_like_jpeg(w: int, h: int, seed: int) -> bytes:
    """Smooth colour fields + texture: compresses like a photo (~70 KB at 640x480)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (h // 40 + 2, w // 40 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    noise = rng.normal(0, 10, (h, w, 3)).astype(np.int16)
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reference
def reference(artifact_dir: Path, images: dict[str, list[bytes]], n: int) -> dict[str, float]:
    artifact = load_artifact(artifact_dir)
    prep = artifact.manifest.preprocessing
    runner = ModelRunner(artifact, "cpu")
    out: dict[str, float] = {}
    for name, imgs in images.items():
        t0 = time.perf_counter()
        for i in range(n):
            preprocess(imgs[i % len(imgs)], prep)
        out[f"decode_ms_{name}"] = (time.perf_counter() - t0) / n * 1000
    sample = preprocess(images["640x480"][0], prep)
    for b in (1, 8, 16, 32):
        batch = np.stack([sample] * b)
        runner.run(batch)
        reps = max(3, 64 // b)
        t0 = time.perf_counter()
        for _ in range(reps):
            runner.run(batch)
        dt = (time.perf_counter() - t0) / reps
        out[f"model_ms_b{b}"] = dt * 1000
        out[f"model_ips_b{b}"] = b / dt
    return out


def single_image_latency(
    server: Server, artifact_dir: Path, imgs: list[bytes], rounds: int, seconds: float
) -> list[tuple[float, float, float, float]]:
    """Concurrency 1 against its budget, interleaved so machine drift hits both alike: each
    round times decode + resize (one thread) and the model at batch 1 in this process, each
    on its own (the issue's budget is their sum), then one image after another through both
    in one thread (what a server without HTTP could do), then the service's p50 at
    concurrency 1. Returns (decode ms, model ms, sequential ms, service p50 ms)."""
    artifact = load_artifact(artifact_dir)
    prep = artifact.manifest.preprocessing
    runner = ModelRunner(artifact, "cpu")
    sample = preprocess(imgs[0], prep)[None]
    runner.run(sample)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(30):
            preprocess(imgs[i % len(imgs)], prep)
        decode_ms = (time.perf_counter() - t0) / 30 * 1000
        t0 = time.perf_counter()
        for _ in range(30):
            runner.run(sample)
        model_ms = (time.perf_counter() - t0) / 30 * 1000
        t0 = time.perf_counter()
        for i in range(30):
            runner.run(preprocess(imgs[i % len(imgs)], prep)[None])
        sequential_ms = (time.perf_counter() - t0) / 30 * 1000
        run = asyncio.run(closed_loop(server.port, imgs, 1, seconds, warmup=0.2))
        out.append((decode_ms, model_ms, sequential_ms, pct(run.latencies, 50)))
    return out


def interleaved_vs_ideal(
    server: Server, artifact_dir: Path, imgs: list[bytes], batch: int, rounds: int, n: int
) -> list[tuple[float, float, float]]:
    """Concurrency 32 against the ideal pipeline, alternating a few seconds of each, so machine
    drift (up to 1.5x within minutes here) hits both alike. Returns (ideal, service img/s,
    service p99 ms) per round."""
    out = []
    for _ in range(rounds):
        ideal = ideal_pipeline(artifact_dir, imgs, batch, n)
        r = measure(server, imgs, 32, n / ideal)  # about as long as the ideal took
        out.append((ideal, r["ips"], r["p99"]))
    return out


def batching_on_off(
    artifact_dir: Path, imgs: list[bytes], port: int, rounds: int, seconds: float
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Concurrency 32 on two servers, max batch 16 and 1, measured alternately. Returns
    (on, off) measurements per round."""
    on, _ = start_server(artifact_dir, port + 1, max_batch_size="16")
    off, _ = start_server(artifact_dir, port + 2, max_batch_size="1")
    try:
        return [
            (measure(on, imgs, 32, seconds), measure(off, imgs, 32, seconds)) for _ in range(rounds)
        ]
    finally:
        stop_server(on)
        stop_server(off)


def _cpu_split(r: dict[str, float]) -> str:
    return f"{r['ms_mltag-model']:.1f} / {r['ms_mltag-decode']:.1f} / {r['ms_loop+other']:.1f}"


def ideal_pipeline(artifact_dir: Path, imgs: list[bytes], batch: int, n: int) -> float:
    """Decode threads feed one model thread that runs full batches; img/s with no HTTP.
    Same ORT settings as the service; decode threads at normal priority."""
    artifact = load_artifact(artifact_dir)
    prep = artifact.manifest.preprocessing
    runner = ModelRunner(artifact, "cpu")
    runner.run(np.stack([preprocess(imgs[0], prep)] * batch))
    ready: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=4 * batch)

    def model_loop() -> None:  # full batches only: the model always runs at `batch`
        run_full_batches(runner, ready, batch)

    t0 = time.perf_counter()
    consumer = threading.Thread(target=model_loop)
    consumer.start()
    with ThreadPoolExecutor(available_cores()) as pool:
        for arr in pool.map(lambda i: preprocess(imgs[i % len(imgs)], prep), range(n)):
            ready.put(arr)
    ready.put(None)
    consumer.join()
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- server
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds by thread name (the service names its model and decode threads; ONNX
        Runtime's workers inherit the model's name; the rest is the event loop and Python)."""
        out: dict[str, float] = {}
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            group = comm if comm in ("mltag-model", "mltag-decode") else "loop+other"
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            out[group] = out.get(group, 0.0) + cpu
        return out

    def rss_mb(self) -> float:
        m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text())
        return int(m.group(1)) / 1024 if m else float("nan")

    def metric(self, name: str) -> float:
        """A metric's value summed over its label sets (model, version...)."""
        text = asyncio.run(fetch(self.port, "GET", "/metrics"))[1].decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + " ", name + "{"))
        )


def start_server(
    artifact: Path, port: int, tree: Path = ROOT, **settings: str
) -> tuple[Server, float]:
    """`python -m service` from source tree `tree` (another checkout, for code A/B runs)."""
    env = {
        **os.environ,
        "MLTAG_ARTIFACT_DIR": str(artifact),
        "MLTAG_PORT": str(port),
        "MLTAG_LOG_LEVEL": os.environ.get("MLTAG_LOG_LEVEL", "warning"),
        **{f"MLTAG_{k.upper()}": v for k, v in settings.items()},
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=tree)
    server = Server(proc, port)
    while True:
        try:
            if asyncio.run(fetch(port, "GET", "/readyz"))[0] == 200:
                return server, time.perf_counter() - t0
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.02)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    server.proc.wait(60)


# ----------------------------------------------------------------------------- client
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body


async def fetch(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request(method, path, body))
    result = await _read_response(reader)
    writer.close()
    return result


def _request(method: str, path: str, body: bytes, content_type: str = "image/jpeg") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    rejected_latencies: list[float] = field(default_factory=list)
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    unsent: int = 0  # open loop: due while all client connections were busy
    wall: float = 0.0


async def closed_loop(
    port: int,
    bodies: Sequence[bytes],
    concurrency: int,
    duration: float,
    warmup: float = 2.0,
    on_measure_start: Callable[[], None] | None = None,
    path: str = "/tag",
    content_type: str = "image/jpeg",
) -> Run:
    """`concurrency` connections, each sending its next request when the last is answered.
    Only requests sent after `warmup` count; `on_measure_start` runs at that moment (so CPU
    counters can be read over exactly the measured window). `path` and `content_type` are
    for other servers (benchmarks/peers)."""
    run = Run()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def mark_start() -> None:
        await asyncio.sleep(warmup)
        if on_measure_start is not None:
            on_measure_start()

    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while (now := time.perf_counter()) < stop_at:
            writer.write(_request("POST", path, bodies[i % len(bodies)], content_type))
            i += concurrency
            status, _ = await _read_response(reader)
            done = time.perf_counter()
            if now >= measure_from:
                _record(run, status, done - now)
        writer.close()

    await asyncio.gather(mark_start(), *(worker(k) for k in range(concurrency)))
    run.wall = duration
    return run


def _record(run: Run, status: int, latency: float) -> None:
    if status == 200:
        run.ok += 1
        run.latencies.append(latency)
    elif status == 429:
        run.rejected += 1
        run.rejected_latencies.append(latency)
    else:
        run.errors += 1


async def open_loop(
    port: int, bodies: Sequence[bytes], rate: float, duration: float, connections: int = 512
) -> Run:
    """Requests start at a fixed rate whatever the server does (what overload looks like)."""
    run = Run()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        if pool.empty():
            run.unsent += 1  # client-side saturation: counted, never silently dropped
            return
        reader, writer = pool.get_nowait()
        t0 = time.perf_counter()
        writer.write(_request("POST", "/tag", bodies[i % len(bodies)]))
        status, _ = await _read_response(reader)
        _record(run, status, time.perf_counter() - t0)
        pool.put_nowait((reader, writer))

    start = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - start) < duration:
        due = int(elapsed * rate)
        while i < due:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    run.wall = time.perf_counter() - start  # includes finishing what was admitted
    return run


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


# ----------------------------------------------------------------------------- main
def measure(
    server: Server, bodies: list[bytes], concurrency: int, duration: float
) -> dict[str, float]:
    b_sum, b_cnt = server.metric("mltag_batch_size_sum"), server.metric("mltag_batch_size_count")
    at_start: dict[str, Any] = {}

    def snapshot() -> dict[str, Any]:
        return {
            "threads": server.thread_cpu(),
            "cpu": server.cpu_seconds(),
            "client": time.process_time(),
            "t": time.perf_counter(),
        }

    run = asyncio.run(
        closed_loop(
            server.port,
            bodies,
            concurrency,
            duration,
            on_measure_start=lambda: at_start.update(snapshot()),
        )
    )
    end = snapshot()  # requests sent before the window closed are still being answered
    elapsed = end["t"] - at_start["t"]
    cpu = (end["cpu"] - at_start["cpu"]) / elapsed
    client_cpu = (end["client"] - at_start["client"]) / elapsed
    per_image = {  # server CPU ms per image answered, by thread group, over the same window
        f"ms_{k}": (end["threads"].get(k, 0.0) - at_start["threads"].get(k, 0.0))
        * 1000
        / max(run.ok, 1)
        for k in ("mltag-model", "mltag-decode", "loop+other")
    }
    d_sum = server.metric("mltag_batch_size_sum") - b_sum
    d_cnt = server.metric("mltag_batch_size_count") - b_cnt
    return {
        "ips": run.ok / run.wall,
        "p50": pct(run.latencies, 50),
        "p95": pct(run.latencies, 95),
        "p99": pct(run.latencies, 99),
        "errors": run.errors,
        "429": run.rejected,
        "batch": d_sum / d_cnt if d_cnt else float("nan"),
        "cpu": cpu,
        "client_cpu": client_cpu,
        "rss": server.rss_mb(),
        **per_image,
    }


@dataclass
class Variant:
    label: str
    tree: Path = ROOT
    settings: dict[str, str] = field(default_factory=dict)


def compare(
    artifact: Path,
    images: dict[str, list[bytes]],
    variants: list[Variant],
    rounds: int,
    duration: float,
    port: int,
) -> None:
    """A/B: each variant at concurrency 1 and 32, both sizes; variants alternate within each
    round (machines drift), so compare numbers in the same row only."""
    print(
        f"\n## A/B, {rounds} round(s) of {duration:.0f} s per cell: "
        "img/s (p50 / p99 ms, mean batch, model and decode CPU ms per image)"
    )
    print("| input | conc | " + " | ".join(v.label for v in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    cells: dict[tuple[str, int, str], list[str]] = {}
    for _ in range(rounds):
        for v in variants:
            server, _ = start_server(artifact, port, v.tree, **v.settings)
            for k in SIZES:
                for c in (1, 32):
                    r = measure(server, images[k], c, duration)
                    cells.setdefault((k, c, v.label), []).append(
                        f"{r['ips']:.1f} ({r['p50']:.1f} / {r['p99']:.0f}, b{r['batch']:.1f}, "
                        f"m{r['ms_mltag-model']:.1f} d{r['ms_mltag-decode']:.1f})"
                    )
            stop_server(server)
    for k in SIZES:
        for c in (1, 32):
            row = [", ".join(cells[(k, c, v.label)]) for v in variants]
            print(f"| {k} | {c} | " + " | ".join(row) + " |")


def variants_from(args: argparse.Namespace) -> list[Variant]:
    if args.baseline:
        return [Variant(f"baseline ({args.baseline})", args.baseline), Variant("this tree")]
    key, values = args.compare.split("=", 1)
    return [Variant(f"{key}={v}", settings={key: v}) for v in values.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--max-batch-size", default="16")
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument(
        "--compare",
        metavar="SETTING=A,B",
        help="only A/B a service setting, e.g. decode_nice=5,15: concurrency 1 and 32, both "
        "sizes, servers alternated over --rounds",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="only A/B this source tree against another checkout, e.g. "
        "`git worktree add /tmp/base HEAD~1`, then --baseline /tmp/base",
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tune_malloc(True)  # the in-process reference and ideal pipeline get the service's tuning
    if args.quick:
        args.duration, args.overload_s, args.concurrency = 3.0, 5.0, "1,32"
    artifact = args.artifact or ROOT / "models" / "default"
    if not (artifact / "manifest.json").exists():
        artifact = ROOT / "build" / "bench-lite0"
        if not (artifact / "manifest.json").exists():
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "standin_artifact.py"),
                    "--output",
                    str(artifact),
                ],
                check=True,
            )
    m = load_artifact(artifact).manifest
    print(
        f"# model {m.name} {m.version} ({m.architecture.backbone}/{m.architecture.head}), "
        f"input {m.preprocessing.input_dtype} {m.preprocessing.layout} "
        f"{m.preprocessing.width}x{m.preprocessing.height}; cores {available_cores()}"
    )
    images = {k: [photo_like_jpeg(w, h, s) for s in range(8)] for k, (w, h) in SIZES.items()}
    for k, imgs in images.items():
        print(f"# {k} JPEG: {np.mean([len(b) for b in imgs]) / 1024:.0f} KB average")
    if args.compare or args.baseline:
        compare(artifact, images, variants_from(args), args.rounds, args.duration, args.port)
        return

    ref = reference(artifact, images, 100 if not args.quick else 20)
    print("\n## Reference (one process, no HTTP)")
    print("| measure | value |\n|---|---|")
    for k, v in ref.items():
        print(f"| {k} | {v:.1f} |")
    n_ideal = 600 if not args.quick else 150
    ideal, best_batch = {}, {}
    for k in SIZES:
        best = max((ideal_pipeline(artifact, images[k], b, n_ideal), b) for b in (8, 16, 32))
        ideal[k], best_batch[k] = best
        print(f"| ideal pipeline {k} (batch {best[1]}) img/s | {best[0]:.1f} |")

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    server, cold = start_server(artifact, args.port, max_batch_size=args.max_batch_size)
    print(f"\n# cold start to ready: {cold:.2f} s; idle RSS {server.rss_mb():.0f} MB")
    print("\n## Service (closed loop)")
    print(
        "| input | conc | img/s | vs ideal above | p50 ms | p95 ms | p99 ms | 429 | err | "
        "mean batch | server CPU (cores) | client CPU (cores) | RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for k in SIZES:
        for c in concurrencies:
            r = measure(server, images[k], c, args.duration)
            results[(k, c)] = r
            print(
                f"| {k} | {c} | {r['ips']:.1f} | {r['ips'] / ideal[k]:.2f} | {r['p50']:.1f} | "
                f"{r['p95']:.1f} | {r['p99']:.1f} | {r['429']:.0f} | {r['errors']:.0f} | "
                f"{r['batch']:.1f} | {r['cpu']:.2f} | {r['client_cpu']:.2f} | {r['rss']:.0f} |"
            )
    print("\n## Concurrency 32 vs the ideal pipeline, interleaved rounds")
    print("| input | ideal img/s | service img/s | ratio | service p99 ms |\n|---|---|---|---|---|")
    for k in SIZES:
        rows = interleaved_vs_ideal(
            server,
            artifact,
            images[k],
            best_batch[k],
            2 if args.quick else 6,
            100 if args.quick else 300,
        )
        for ideal_ips, ips, p99 in rows:
            print(f"| {k} | {ideal_ips:.1f} | {ips:.1f} | {ips / ideal_ips:.2f} | {p99:.0f} |")
        median = statistics.median(ips / i for i, ips, _ in rows)
        print(f"| {k} | | | **{median:.2f}** (median) | |")

    print("\n## Where the server's CPU goes: ms per image, by thread")
    print(
        "| input | conc | model thread (+ ORT workers, + decoding on the idle fast path) "
        "| decode | event loop + other | total |"
    )
    print("|---|---|---|---|---|---|")
    for (k, c), r in results.items():
        parts = [r["ms_mltag-model"], r["ms_mltag-decode"], r["ms_loop+other"]]
        print(f"| {k} | {c} | " + " | ".join(f"{v:.2f}" for v in parts) + f" | {sum(parts):.2f} |")

    print("\n## Concurrency 1 vs decode + model(b1), interleaved rounds")
    print(
        "| input | decode ms | model b1 ms | sequential ms | service p50 ms "
        "| ratio (vs decode + model) | vs sequential |\n|---|---|---|---|---|---|---|"
    )
    for k in SIZES:
        latency = single_image_latency(server, artifact, images[k], 3 if args.quick else 12, 1.5)
        for decode_ms, model_ms, seq_ms, p50 in latency:
            print(
                f"| {k} | {decode_ms:.1f} | {model_ms:.1f} | {seq_ms:.1f} | {p50:.1f} "
                f"| {p50 / (decode_ms + model_ms):.2f} | {p50 / seq_ms:.2f} |"
            )
        median = statistics.median(p / (d + m) for d, m, _, p in latency)
        median_seq = statistics.median(p / q for _, _, q, p in latency)
        print(f"| {k} | | | | median ratios | **{median:.2f}** | **{median_seq:.2f}** |")

    capacity = max(r["ips"] for (k, _), r in results.items() if k == "640x480")
    rss_before = server.rss_mb()
    run = asyncio.run(open_loop(server.port, images["640x480"], 4 * capacity, args.overload_s))
    alive = server.proc.poll() is None
    print(
        f"\n## Overload: open loop at {4 * capacity:.0f} req/s (4x capacity) for "
        f"{args.overload_s:.0f} s"
    )
    print(
        "| ok img/s | 429s | 429 p50 ms | 429 p95 ms | 429 p99 ms | ok p99 ms | other errors | "
        "unsent (client busy) | RSS before/after MB | alive |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    print(
        f"| {run.ok / run.wall:.1f} | {run.rejected} | {pct(run.rejected_latencies, 50):.1f} | "
        f"{pct(run.rejected_latencies, 95):.1f} | {pct(run.rejected_latencies, 99):.1f} | "
        f"{pct(run.latencies, 99):.1f} | {run.errors} | {run.unsent} | "
        f"{rss_before:.0f}/{server.rss_mb():.0f} | {alive} |"
    )
    stop_server(server)

    print(
        "\n## Batching on (max batch 16) vs off (max batch 1) at concurrency 32, 640x480, "
        "interleaved rounds\n| on img/s | off img/s | ratio | on: server CPU ms per image, "
        "model / decode / loop | off: same |\n|---|---|---|---|---|"
    )
    pairs = batching_on_off(
        artifact, images["640x480"], args.port, 1 if args.quick else 4, args.duration / 2
    )
    for on, off in pairs:
        print(
            f"| {on['ips']:.1f} | {off['ips']:.1f} | {on['ips'] / off['ips']:.2f} "
            f"| {_cpu_split(on)} | {_cpu_split(off)} |"
        )
    median = statistics.median(on["ips"] / off["ips"] for on, off in pairs)
    print(f"| | median ratio | **{median:.2f}** | | |")


if __name__ == "__main__":
    main()
