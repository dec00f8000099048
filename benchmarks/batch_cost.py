"""What a batch costs per image on this machine, by batch size and thread layout: the facts
behind the service's batching plan (service/inference/batch_plan.py).

    python benchmarks/batch_cost.py [--artifact models/default] [--rounds 2]

Layouts, each with ONNX Runtime's session options as the service sets them (no spinning):
one run on a session with a thread per core; one run on a one-thread session; two runs at
once on one-thread sessions (the service's workers on 2 cores); two runs at once sharing the
session with a thread per core. Prints wall-clock and CPU ms per image (CPU: the whole
process, so with two runs at once it is the cost of both).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mltag_artifact import load_artifact
from mltag_artifact.preprocess import preprocess
from mltag_artifact.runner import ModelRunner, available_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import photo_like_jpeg

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 2, 4, 8, 16, 32)


def timed(
    run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, at_once: int
) -> tuple[float, float]:
    """(wall ms, CPU ms) per image, `at_once` threads each running `batch` repeatedly."""
    reps = max(2, 96 // len(batch) // at_once)
    for _ in range(at_once):
        run(batch)  # a new shape: ORT plans its memory first

    def work() -> None:
        for _ in range(reps):
            run(batch)

    threads = [threading.Thread(target=work) for _ in range(at_once)]
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    images = reps * len(batch) * at_once
    return (time.perf_counter() - t0) / images * 1000, (time.process_time() - c0) / images * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    art = load_artifact(args.artifact)
    sample = preprocess(photo_like_jpeg(640, 480, 0), art.manifest.preprocessing)
    cores = available_cores()
    wide = ModelRunner(art, "cpu", explain=False)
    one = ModelRunner(art, "cpu", intra_op_threads=1, explain=False)
    layouts = {
        f"one run, {cores} threads": (wide.run, 1),
        "one run, 1 thread": (one.run, 1),
        "two runs at once, 1 thread each": (one.run, 2),
        f"two runs at once, sharing {cores} threads": (wide.run, 2),
    }
    cells: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):  # rounds interleave the layouts: machine drift hits all
        for b in SIZES:
            batch = np.stack([sample] * b)
            for name, (run, at_once) in layouts.items():
                cells.setdefault((name, b), []).append(timed(run, batch, at_once))
    m = art.manifest
    print(f"# {m.name} {m.version} ({m.preprocessing.width} px), {cores} cores, "
          f"{args.rounds} rounds (median); wall / CPU ms per image")  # fmt: skip
    print("| batch | " + " | ".join(layouts) + " |")
    print("|---|" + "---|" * len(layouts))
    for b in SIZES:
        row = []
        for name in layouts:
            walls, cpus = zip(*cells[(name, b)], strict=True)
            row.append(f"{np.median(walls):.2f} / {np.median(cpus):.2f}")
        print(f"| {b} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
