"""How many batches run at once and how large they get, chosen per loaded model from its
measured cost. On a CPU a large batch can cost more per image than a small one (its
activations no longer fit the caches: the int8 clip-art model costs 2.8 ms per image at batch
2 and 3.6 ms at batch 16 on one thread), and two small batches side by side keep the cores busier
than one batch split over them; a GPU is the opposite case. So the service times the model at
batch sizes 1, 2, 4, ... up to `max_batch_size`, with `workers` batches at a time, and caps
batches at the fastest size (benchmarks/RESULTS.md#batching-plan)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mltag_artifact.runner import ModelRunner, available_cores

from ..settings import Settings

log = logging.getLogger("mltag.model")

IMAGES_PER_WORKER = 8  # per timing: long enough to average, short enough for a big model
ROUNDS = 2  # timings per size, interleaved across sizes; the median counts
GIVE_UP = 1.25  # stop trying larger sizes once one costs this much more per image than the best
PREFER_LARGER = 0.10  # within 10% of the best: the larger (each batch also costs the event loop)


@dataclass(frozen=True)
class BatchPlan:
    workers: int  # model threads: batches running at once
    max_batch_size: int  # the cap the batcher uses (<= settings.max_batch_size)
    ms_per_image: dict[int, float] = field(default_factory=dict)  # measured; empty: not tuned
    # The session batches run on, when not the tagger's: with several workers on a CPU, one
    # ONNX Runtime thread each (two runs sharing a two-thread session spend ~10-25% more CPU
    # per image); the tagger's session, one thread per core, still runs a lone image fastest.
    runner: ModelRunner | None = None


def model_workers(settings: Settings, provider: str) -> int:
    """settings.model_workers, else one per usable core on a CPU, one on a GPU (which queues
    kernels from one thread best)."""
    if settings.model_workers:
        return settings.model_workers
    return available_cores() if provider == "CPUExecutionProvider" else 1


def plan_batches(
    runner: ModelRunner,
    settings: Settings,
    single_thread: Callable[[int], ModelRunner],
    thread_setup: Callable[[], None] | None = None,
) -> BatchPlan:
    """`single_thread(n)` opens the model again with one ONNX Runtime thread, warmed up to
    batches of n (called only when several workers share the CPU); `thread_setup` prepares
    the timing threads as the model threads are (name, priority). The runner batches run on
    is warmed up (and checked) at max_batch_size here."""
    workers = model_workers(settings, runner.provider)
    shared = runner.provider != "CPUExecutionProvider" or workers == 1
    if shared or runner.session_threads == 1:
        batch_runner = runner
        runner.warm_up(settings.warmup_runs, settings.max_batch_size)
    else:
        batch_runner = single_thread(settings.max_batch_size)
    own = None if batch_runner is runner else batch_runner
    if not settings.batch_tuning or settings.max_batch_size == 1:
        return BatchPlan(workers, settings.max_batch_size, runner=own)
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 256, runner.sample_shape).astype(runner.dtype)
    sizes = candidate_sizes(settings.max_batch_size)
    costs = measure(batch_runner.run, sample, sizes, workers, thread_setup)
    chosen = pick(costs)
    if own is not None and chosen < settings.max_batch_size:
        # A session keeps the memory of the largest batch it ran (ONNX Runtime's arena): the
        # one timed holds buffers for batches the plan will never run (about half the
        # service's memory: benchmarks/RESULTS.md, memory after load). Serve from a fresh
        # one, warmed up to the chosen size.
        del batch_runner
        own = single_thread(chosen)
    log.info(
        "batching plan: %d model thread(s), batches of up to %d (ms per image by batch size: %s)",
        workers, chosen, ", ".join(f"{b}: {ms:.2f}" for b, ms in costs.items()),
    )  # fmt: skip
    return BatchPlan(workers, chosen, costs, own)


def candidate_sizes(limit: int) -> list[int]:
    sizes = [1]
    while sizes[-1] * 2 <= limit:
        sizes.append(sizes[-1] * 2)
    return sizes if sizes[-1] == limit else [*sizes, limit]


def measure(
    run: Callable[[np.ndarray], np.ndarray],
    sample: np.ndarray,
    sizes: list[int],
    workers: int,
    thread_setup: Callable[[], None] | None = None,
) -> dict[int, float]:
    """Median wall-clock ms per image at each size with `workers` runs at a time. Sizes are
    tried in increasing order until one costs GIVE_UP times the best; later rounds repeat the
    sizes tried, interleaved, so a burst of load elsewhere does not favour one size."""
    times: dict[int, list[float]] = {}
    with ThreadPoolExecutor(workers, initializer=thread_setup) as pool:
        for b in sizes:
            times[b] = [_time_size(pool, run, sample, b, workers)]
            best = min(v[0] for v in times.values())
            if times[b][0] > GIVE_UP * best:
                break
        for _ in range(ROUNDS - 1):
            for b in times:
                times[b].append(_time_size(pool, run, sample, b, workers))
    return {b: statistics.median(v) for b, v in times.items()}


def _time_size(
    pool: ThreadPoolExecutor,
    run: Callable[[np.ndarray], np.ndarray],
    sample: np.ndarray,
    size: int,
    workers: int,
) -> float:
    batch = np.broadcast_to(sample, (size, *sample.shape)).copy()
    runs = workers * max(2, -(-IMAGES_PER_WORKER // size))
    list(pool.map(run, [batch] * workers))  # a new shape: ORT plans its memory first
    t0 = time.perf_counter()
    list(pool.map(run, [batch] * runs))
    return (time.perf_counter() - t0) / (runs * size) * 1000


def pick(ms_per_image: dict[int, float]) -> int:
    """The fastest size per image; of sizes within PREFER_LARGER of it, the largest."""
    best = min(ms_per_image.values())
    return max(b for b, ms in ms_per_image.items() if ms <= best * (1 + PREFER_LARGER))
