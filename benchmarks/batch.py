"""Bulk-tagging benchmark: `mltag-batch` (Ray Data) against the ideal in-process pipeline,
measured in the same run on real clip art.

    .venv/bin/python benchmarks/batch.py [--images 2000] [--rounds 3] [--variants 2x1,1x2]
    .venv/bin/python benchmarks/batch.py --quick          # a smoke test: 60 images, 1 round
    .venv/bin/python benchmarks/batch.py --images-dir DIR # your own images instead

Data: Debian's openclipart-png (8,121 public-domain PNGs from a few KB to over 50 Mpx),
fetched with `apt-get download` into .cache/openclipart-png and unpacked with `dpkg -x`; a
seeded sample of --images of them, listed in a JSONL manifest.

Each round runs, one after the other so machine drift hits all alike:
  * ideal: one process, no Ray: a decode thread per core reads and preprocesses the files
    with the contract's preprocessing, one model thread runs ONNX Runtime (the contract's
    runner) on full batches of the best size (8/16/32, picked first on a subset). Twice:
    with one intra-op thread per core (the service's setting) and with one; each round's
    ratio is taken against the faster of the two;
  * each variant AxC of `mltag-batch` (A actors x C CPUs each): the real command, embedded
    Ray, same batch size. Its throughput after startup (from the first actor ready to the
    end), Ray's startup and the actors' start come from its `_summary.json`.
Peak memory is the sum of PSS over each command's process tree (Ray: driver, GCS, raylet,
agents, workers); CPU seconds are split by process kind.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from ideal import run_full_batches  # noqa: E402

CACHE = ROOT / ".cache" / "openclipart-png"
IMAGES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
PACKAGE = "openclipart-png"


# ------------------------------------------------------------------------------------ data
def clipart_files() -> list[Path]:
    """Every PNG of Debian's openclipart-png, downloaded and unpacked on first use."""
    root = CACHE / "root"
    if not root.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        debs = list(CACHE.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            print(f"# apt-get download {PACKAGE} (131 MB)", file=sys.stderr)
            subprocess.run(["apt-get", "download", PACKAGE], cwd=CACHE, check=True)
            debs = list(CACHE.glob(f"{PACKAGE}_*.deb"))
        tmp = CACHE / "root.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(debs[0]), str(tmp)], check=True)
        tmp.rename(root)
    return sorted(root.rglob("*.png"))


def sample(n: int, seed: int = 0) -> list[Path]:
    files = clipart_files()
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def describe(files: list[Path]) -> str:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    pixels = []
    for f in files:
        with Image.open(f) as im:
            pixels.append(im.size[0] * im.size[1])
    mb = sum(f.stat().st_size for f in files) / 1e6
    big = sum(p > 40_000_000 for p in pixels)
    return (
        f"{len(files)} PNGs, {mb:.0f} MB; median {statistics.median(pixels) / 1e6:.2f} Mpx, "
        f"max {max(pixels) / 1e6:.0f} Mpx; {big} over the 40 Mpx limit (error rows)"
    )


# ------------------------------------------------------------------------ process watching
@dataclass
class Watch:
    """Polls a process tree: peak total PSS, and CPU seconds per process (last seen)."""

    root: int
    interval: float = 0.5
    peak_mb: float = 0.0
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Watch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        tree = descendants(self.root)
        total = 0.0
        for pid in tree:
            total += pss_mb(pid)
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.cpu[pid] = (kind(pid, self.root), cpu)
        self.peak_mb = max(self.peak_mb, total)
        self.timeline.append((time.time(), self.cpu_by_kind()))

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by kind spent between two wall-clock times (nearest samples)."""
        if not self.timeline:
            return {}
        before = max((s for s in self.timeline if s[0] <= start), default=self.timeline[0])[1]
        after = min((s for s in self.timeline if s[0] >= end), default=self.timeline[-1])[1]
        return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for k, s in self.cpu.values():
            out[k] += s
        return dict(out)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "MapWorker" in comm or "MapWorker" in cmd:
        return "tagging actors"
    return "ray system"


# ------------------------------------------------------------------------ the ideal pipeline
def ideal_worker(manifest: Path, artifact: Path, batch: int, threads: int) -> dict[str, float]:
    """Runs in its own process (so its memory is measured like mltag-batch's)."""
    from PIL import Image

    from mltag_artifact import load_artifact
    from mltag_artifact.preprocess import UNTRUSTED_LIMITS, ImageError, preprocess
    from mltag_artifact.runner import ModelRunner, available_cores

    paths = [json.loads(line)["path"] for line in manifest.read_text().splitlines()]
    Image.MAX_IMAGE_PIXELS = 40_000_000  # the service's (and mltag-batch's) limit
    loaded = load_artifact(artifact)
    prep = loaded.manifest.preprocessing
    runner = ModelRunner(loaded, "cpu", intra_op_threads=threads)
    runner.warm_up(1, batch)
    ready: queue.Queue[Any] = queue.Queue(maxsize=4 * batch)

    def load(path: str) -> Any:
        try:
            return preprocess(Path(path).read_bytes(), prep, UNTRUSTED_LIMITS)
        except ImageError:
            return None

    def model_loop() -> None:  # full batches only: the model always runs at `batch`
        run_full_batches(runner, ready, batch)

    t0, started_at = time.perf_counter(), time.time()
    consumer = threading.Thread(target=model_loop)
    consumer.start()
    with ThreadPoolExecutor(available_cores()) as pool:
        for arr in pool.map(load, paths):
            if arr is not None:
                ready.put(arr)
    ready.put(None)
    consumer.join()
    seconds = time.perf_counter() - t0
    return {"images": len(paths), "seconds": seconds, "ips": len(paths) / seconds,
            "started_at": started_at, "ended_at": time.time()}  # fmt: skip


@dataclass
class Result:
    ips: float  # after startup
    wall_s: float  # the whole command
    peak_mb: float
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def run_ideal(manifest: Path, artifact: Path, batch: int, threads: int = 0) -> Result:
    argv = [sys.executable, __file__, "--ideal-worker", str(manifest), "--artifact",
            str(artifact), "--batch", str(batch), "--ort-threads", str(threads)]  # fmt: skip
    return _watched(argv, lambda out: json.loads(out.strip().splitlines()[-1]))


def run_batch(manifest: Path, artifact: Path, batch: int, variant: str) -> Result:
    actors, cpus = variant.split("x")
    out = Path(tempfile.mkdtemp(prefix="mltag-batch-bench-"))
    argv = [str(Path(sys.executable).parent / "mltag-batch"), "--artifact", str(artifact),
            "--input", str(manifest), "--output", str(out / "out"), "--quiet",
            "--batch-size", str(batch), "--concurrency", actors,
            "--cpus-per-actor", cpus]  # fmt: skip
    try:
        result = _watched(argv, lambda _: json.loads((out / "out" / "_summary.json").read_text()))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result


def _watched(argv: list[str], parse: Any) -> Result:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc.pid).start()
    stdout, stderr = proc.communicate()
    watch.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    info = parse(stdout)
    if "this_run" in info:  # mltag-batch's summary
        run = info["this_run"]
        steady = watch.cpu_between(*run["after_startup_window"])
        return Result(run["images_per_s_after_startup"], wall, watch.peak_mb,
                      watch.cpu_by_kind(), {"summary": info, "steady_cpu": steady})  # fmt: skip
    info["steady_cpu"] = watch.cpu_between(info["started_at"], info["ended_at"])
    return Result(info["ips"], wall, watch.peak_mb, watch.cpu_by_kind(), info)


# ------------------------------------------------------------------------------------ main
def write_manifest(files: list[Path], directory: Path) -> Path:
    path = directory / "inputs.jsonl"
    path.write_text("".join(json.dumps({"path": str(f)}) + "\n" for f in files))
    return path


def best_batch(files: list[Path], artifact: Path, work: Path) -> int:
    subset = write_manifest(files[: min(300, len(files))], work / "subset")
    rates = {b: run_ideal(subset, artifact, b).ips for b in (8, 16, 32)}
    print("| ideal pipeline on a subset: batch | img/s |\n|---|---|")
    for b, r in rates.items():
        print(f"| {b} | {r:.1f} |")
    return max(rates, key=lambda b: rates[b])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="2x1,1x2", help="mltag-batch actors x CPUs each")
    parser.add_argument("--batch", type=int, help="skip the batch-size search")
    parser.add_argument("--quick", action="store_true", help="60 images, 1 round, one variant")
    parser.add_argument("--images-dir", type=Path, help="images to use instead of clip art")
    parser.add_argument("--ideal-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ort-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ideal_worker:
        result = ideal_worker(args.ideal_worker, args.artifact, args.batch, args.ort_threads)
        print(json.dumps(result))
        return
    if args.quick:
        args.images, args.rounds, args.variants, args.batch = 60, 1, "2x1", args.batch or 16
    from mltag_artifact.runner import available_cores

    if args.images_dir:
        found = sorted(p for p in args.images_dir.rglob("*") if p.suffix.lower() in IMAGES)
        files = found[: args.images]
    else:
        files = sample(args.images)
    variants = args.variants.split(",")
    print(f"# {describe(files)}; cores {available_cores()}; model {args.artifact}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "subset").mkdir()
        batch = args.batch or best_batch(files, args.artifact, work)
        manifest = write_manifest(files, work)
        rounds = []
        for r in range(args.rounds):
            row = {
                "ideal": run_ideal(manifest, args.artifact, batch),
                "ideal-ort1": run_ideal(manifest, args.artifact, batch, threads=1),
            }
            for v in variants:
                row[v] = run_batch(manifest, args.artifact, batch, v)
            rounds.append(row)
            rates = ", ".join(f"{k} {x.ips:.1f} img/s" for k, x in row.items())
            print(f"# round {r + 1}: {rates}", file=sys.stderr)
    report(rounds, variants, batch)


def report(rounds: list[dict[str, Result]], variants: list[str], batch: int) -> None:
    print(f"\n## mltag-batch vs the ideal pipeline (batch {batch}), interleaved rounds")
    print("Ideal: ONNX Runtime with one intra-op thread per core / with one; ratios are against")
    print("the faster of the two in the same round. mltag-batch: after startup.\n")
    head = " | ".join(f"{v} img/s | {v} ratio" for v in variants)
    print(f"| round | ideal img/s | ideal ort=1 img/s | {head} |")
    print("|---" * (3 + 2 * len(variants)) + "|")
    for i, row in enumerate(rounds, 1):
        best = _best_ideal(row)
        cells = " | ".join(f"{row[v].ips:.1f} | {row[v].ips / best:.2f}" for v in variants)
        print(f"| {i} | {row['ideal'].ips:.1f} | {row['ideal-ort1'].ips:.1f} | {cells} |")
    med = [f"**{_med(r[v].ips / _best_ideal(r) for r in rounds):.2f}**" for v in variants]
    print("| median | | | " + " | ".join(f" | {m}" for m in med) + " |")
    _report_costs(rounds, variants)


def _best_ideal(row: dict[str, Result]) -> float:
    return max(row["ideal"].ips, row["ideal-ort1"].ips)


def _report_costs(rounds: list[dict[str, Result]], variants: list[str]) -> None:
    print("\n## Startup, wall time, memory, CPU (medians over rounds)")
    print("| run | Ray startup s | first / all actors ready s | wall s | peak PSS MB | "
          "CPU s: driver / Ray system / tagging actors |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in ("ideal", "ideal-ort1"):
        rs = [r[name] for r in rounds]
        wall, peak = _med(x.wall_s for x in rs), _med(x.peak_mb for x in rs)
        cpu = _med(x.cpu.get("driver", 0) for x in rs)
        print(f"| {name} | - | - | {wall:.1f} | {peak:.0f} | {cpu:.1f} / - / - |")
    for v in variants:
        rs = [r[v] for r in rounds]
        runs = [x.extra["summary"]["this_run"] for x in rs]
        cpu_split = " / ".join(
            f"{_med(x.cpu.get(k, 0) for x in rs):.1f}"
            for k in ("driver", "ray system", "tagging actors")
        )
        print(f"| mltag-batch {v} | {_med(r['ray_startup_s'] for r in runs):.1f} | "
              f"{_med(r['first_actor_ready_s'] for r in runs):.1f} / "
              f"{_med(r['all_actors_ready_s'] for r in runs):.1f} | "
              f"{_med(x.wall_s for x in rs):.1f} | "
              f"{_med(x.peak_mb for x in rs):.0f} | {cpu_split} |")  # fmt: skip

    print("\n## CPU per image after startup (ms, medians over rounds; all of the run's processes)")
    print("| run | total | driver | Ray system | tagging actors |\n|---|---|---|---|---|")
    for name in ("ideal", "ideal-ort1", *variants):
        rs = [r[name] for r in rounds]
        n = [_images(x) for x in rs]
        parts = {
            k: _med(
                x.extra["steady_cpu"].get(k, 0.0) * 1000 / m for x, m in zip(rs, n, strict=True)
            )
            for k in ("driver", "ray system", "tagging actors")
        }
        total = _med(
            sum(x.extra["steady_cpu"].values()) * 1000 / m for x, m in zip(rs, n, strict=True)
        )
        cells = " | ".join(f"{parts[k]:.1f}" for k in parts)
        print(f"| {name} | {total:.1f} | {cells} |")

    print("\n## Inside the tagging actors: seconds summed over shards (medians over rounds)")
    print("| variant | decode CPU | model wall | write | shard wall | errors |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        runs = [r[v].extra["summary"] for r in rounds]
        prof = [s["this_run"]["profile_s"] for s in runs]
        print(f"| {v} | " + " | ".join(f"{_med(p[k] for p in prof):.1f}"
              for k in ("decode_s", "model_s", "write_s", "wall_s"))
              + f" | {runs[0]['errors_by_code']} |")  # fmt: skip


def _images(result: Result) -> int:
    if "summary" in result.extra:
        return int(result.extra["summary"]["this_run"]["processed"])
    return int(result.extra["images"])


def _med(values: Any) -> float:
    return float(statistics.median(list(values)))


if __name__ == "__main__":
    main()
