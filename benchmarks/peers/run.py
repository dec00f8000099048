"""mltag beside the servers a user would pick instead, same model, same images, same client.

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install -r benchmarks/peers/requirements.txt
    .venv/bin/python benchmarks/peers/run.py --peer-python .venv-peers/bin/python

Servers (each serves the same artifact, one process tree each, started and stopped per round
so none runs beside another): mltag (`python -m service`, default settings), `naive.py`
(FastAPI + ORT at batch 1 in the thread pool), `bento_service.py` (BentoML adaptive
batching), `ray_serve.py` (Ray Serve `@serve.batch` behind its proxy). Rounds interleave the
servers (machines drift). Per cell: img/s, p50/p99 latency, CPU ms per image over the whole
process tree (Ray's raylet and workers included), and the tree's PSS after the cell. The
client is benchmarks/load.py's keep-alive asyncio client, in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(__file__).resolve().parent
ROOT = PEERS.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from load import SIZES, closed_loop, pct, photo_like_jpeg  # noqa: E402

CONCURRENCY = (1, 32)
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Peer:
    name: str
    command: Callable[[str, int], list[str]]  # (peer python, port) -> argv
    path: str = "/tag"
    multipart_field: str | None = None  # BentoML takes multipart/form-data


def _peers(names: list[str]) -> list[Peer]:
    known = [
        Peer("mltag", lambda py, port: [sys.executable, "-m", "service"]),
        Peer(
            "naive",
            lambda py, port: [
                py,
                "-m",
                "uvicorn",
                "--app-dir",
                str(PEERS),
                "naive:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        ),
        Peer(
            "bentoml",
            lambda py, port: [
                str(Path(py).parent / "bentoml"),
                "serve",
                "bento_service:Tagger",
                "--port",
                str(port),
                "--working-dir",
                str(PEERS),
            ],
            multipart_field="images",
        ),
        Peer("ray", lambda py, port: [py, str(PEERS / "ray_serve.py"), "--port", str(port)]),
    ]
    by_name = {p.name: p for p in known}
    unknown = set(names) - set(by_name)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; known: {list(by_name)}")
    return [by_name[n] for n in names]


def _multipart(field: str, data: bytes) -> tuple[bytes, str]:
    boundary = "mltagpeerbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Ray starts its raylet and workers as children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        out.append(p)
        frontier.extend(children.get(p, []))
    return out


def _tree_cpu(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _tree_pss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(
            (int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0
        )
    return total / 1024


class Running:
    """One peer's process tree on a port, ready to answer."""

    def __init__(self, peer: Peer, peer_python: str, artifact: Path, port: int) -> None:
        env = {
            **os.environ,
            "PEER_ARTIFACT": str(artifact),
            "MLTAG_ARTIFACT_DIR": str(artifact),
            "MLTAG_PORT": str(port),
            "MLTAG_LOG_LEVEL": "warning",
            "RAY_USAGE_STATS_ENABLED": "0",
            "BENTOML_DO_NOT_TRACK": "True",
        }
        self.peer, self.port = peer, port
        self.proc = subprocess.Popen(
            peer.command(peer_python, port),
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def bodies(self, images: list[bytes]) -> tuple[list[bytes], str]:
        if self.peer.multipart_field is None:
            return images, "image/jpeg"
        parts = [_multipart(self.peer.multipart_field, b) for b in images]
        return [p[0] for p in parts], parts[0][1]

    def wait_ready(self, sample: bytes, timeout: float = 180.0) -> None:
        """Ready when it tags an image (Ray and BentoML answer health checks before that)."""
        bodies, ctype = self.bodies([sample])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.peer.name} exited with {self.proc.returncode}")
            try:
                run = asyncio.run(
                    closed_loop(
                        self.port,
                        bodies,
                        1,
                        0.2,
                        warmup=0.0,
                        path=self.peer.path,
                        content_type=ctype,
                    )
                )
                if run.ok:
                    return
            except (OSError, ValueError, asyncio.IncompleteReadError):
                pass  # not listening yet, or a proxy's "not deployed yet" answer
            time.sleep(0.5)
        raise SystemExit(f"{self.peer.name} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def measure(
    server: Running, images: list[bytes], concurrency: int, duration: float, warmup: float
) -> dict:
    bodies, ctype = server.bodies(images)
    mark: dict[str, float] = {}

    def start() -> None:
        mark.update(cpu=_tree_cpu(server.proc.pid), t=time.perf_counter())

    run = asyncio.run(
        closed_loop(
            server.port,
            bodies,
            concurrency,
            duration,
            warmup=warmup,
            on_measure_start=start,
            path=server.peer.path,
            content_type=ctype,
        )
    )
    cpu = _tree_cpu(server.proc.pid) - mark["cpu"]
    return {
        "ips": run.ok / run.wall,
        "p50": pct(run.latencies, 50),
        "p99": pct(run.latencies, 99),
        "cpu_ms": cpu * 1000 / max(run.ok, 1),
        "errors": run.errors + run.rejected,
        "pss": _tree_pss_mb(server.proc.pid),
    }


Cells = dict[tuple[str, int, str], list[dict]]  # (size, concurrency, server) -> rounds


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def print_table(cells: Cells, servers: list[str]) -> None:
    print(
        "| input | conc | server | img/s | × mltag | p50 ms | p99 ms | CPU ms/img | PSS MB "
        "| errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in SIZES:
        for c in CONCURRENCY:
            base = cells.get((size, c, "mltag"))
            for name in servers:
                rows = cells[(size, c, name)]
                ips = _median(rows, "ips")
                ratio = f"{ips / _median(base, 'ips'):.2f}" if base else "–"
                print(
                    f"| {size} | {c} | {name} | {ips:.1f} | {ratio} | {_median(rows, 'p50'):.1f} "
                    f"| {_median(rows, 'p99'):.0f} | {_median(rows, 'cpu_ms'):.1f} "
                    f"| {_median(rows, 'pss'):.0f} | {sum(r['errors'] for r in rows)} |"
                )


def print_targets(cells: Cells, servers: list[str]) -> None:
    """The issue's targets, each from the medians of this run."""

    def m(size: str, c: int, name: str, key: str) -> float:
        return _median(cells[(size, c, name)], key)

    checks = []
    for size in SIZES:
        if "naive" in servers:
            checks.append(
                (
                    f"{size} c32 img/s ≥ 1.25× naive",
                    m(size, 32, "mltag", "ips"),
                    1.25 * m(size, 32, "naive", "ips"),
                    True,
                )
            )
            checks.append(
                (
                    f"{size} c1 p50 ≤ naive",
                    m(size, 1, "mltag", "p50"),
                    m(size, 1, "naive", "p50"),
                    False,
                )
            )
            checks.append(
                (
                    f"{size} c32 p99 ≤ naive",
                    m(size, 32, "mltag", "p99"),
                    m(size, 32, "naive", "p99"),
                    False,
                )
            )
        if "bentoml" in servers:
            checks.append(
                (
                    f"{size} c32 img/s ≥ 1.6× BentoML",
                    m(size, 32, "mltag", "ips"),
                    1.6 * m(size, 32, "bentoml", "ips"),
                    True,
                )
            )
    print("\n| target | mltag | bound | met |\n|---|---|---|---|")
    for what, got, bound, higher in checks:
        met = got >= bound if higher else got <= bound
        print(f"| {what} | {got:.1f} | {bound:.1f} | {'yes' if met else 'NO'} |")


def print_round_ratios(cells: Cells, servers: list[str]) -> None:
    """mltag's img/s over each peer's at concurrency 32, round by round: the medians above
    hide how far the rounds spread (these machines drift)."""
    if "mltag" not in servers:
        return
    print("\n| input | mltag img/s ÷ | per round (c32) |\n|---|---|---|")
    for size in SIZES:
        ours = [r["ips"] for r in cells[(size, 32, "mltag")]]
        for name in servers:
            if name != "mltag":
                theirs = [r["ips"] for r in cells[(size, 32, name)]]
                ratios = ", ".join(f"{a / b:.2f}×" for a, b in zip(ours, theirs, strict=True))
                print(f"| {size} | {name} | {ratios} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--artifact", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--servers", default="mltag,naive,bentoml,ray")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per cell")
    parser.add_argument("--port", type=int, default=8731)
    args = parser.parse_args()
    servers = args.servers.split(",")
    peers = _peers(servers)
    images = {k: [photo_like_jpeg(w, h, s) for s in range(8)] for k, (w, h) in SIZES.items()}
    print(
        f"# artifact {args.artifact}; {os.cpu_count()} cores; {args.rounds} rounds × "
        f"{args.duration:.0f} s per cell; servers alternate within each round"
    )
    cells: Cells = {}
    for r in range(args.rounds):
        for peer in peers:
            server = Running(peer, args.peer_python, args.artifact.resolve(), args.port)
            try:
                server.wait_ready(images["640x480"][0])
                for size, imgs in images.items():
                    for c in CONCURRENCY:
                        row = measure(server, imgs, c, args.duration, args.warmup)
                        cells.setdefault((size, c, peer.name), []).append(row)
                        print(
                            f"# round {r + 1} {peer.name} {size} c{c}: {row['ips']:.1f} img/s",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                server.stop()
    print_table(cells, servers)
    print_targets(cells, servers)
    print_round_ratios(cells, servers)


if __name__ == "__main__":
    main()
