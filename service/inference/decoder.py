"""Decoding off the event loop: image bytes -> model input samples in the decode thread pool,
through the contract's preprocessing, under the process-wide decode memory budget, counting
the images in progress (the batcher may wait for them) and skipping work nobody waits for any
more."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import DecodeBudget, DecodeLimits, ImageError, preprocess

from ..metrics import ModelMetrics

T = TypeVar("T")
Decoded = np.ndarray | ImageError


class Decoder:
    def __init__(
        self,
        pool: ThreadPoolExecutor,
        prep: Preprocessing,
        limits: DecodeLimits,
        budget: DecodeBudget,
        metrics: ModelMetrics,
        on_done: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._prep = prep
        self._limits = limits
        self._budget = budget
        self._metrics = metrics
        self._on_done = on_done
        self.in_progress = 0  # images submitted to the pool and not yet finished
        self._queue = _FairQueue()

    def decode(self, data: bytes, abandoned: threading.Event, deadline: float) -> Decoded | None:
        """One image, on the calling thread; None when skipped because the request was
        abandoned or its deadline passed (don't spend a core on it)."""
        if abandoned.is_set() or time.monotonic() > deadline:
            return None
        t0 = time.perf_counter()
        try:
            sample = preprocess(data, self._prep, self._limits, self._budget, deadline)
        except ImageError as e:
            return e
        self._metrics.decode_duration.observe(time.perf_counter() - t0)
        return sample

    def submit(
        self, payloads: list[bytes], abandoned: threading.Event, deadline: float
    ) -> list[asyncio.Future[Decoded | None]]:
        """Decode every payload in the pool, requests served in turn (see _FairQueue); cancel
        a future to drop a job that has not started."""
        jobs = [_Job(Future(), p, abandoned, deadline) for p in payloads]
        self._queue.put(jobs)
        for _ in jobs:  # one pool task per job; each runs whichever job is next in turn
            self._pool.submit(self._run_next)
        return [asyncio.wrap_future(job.future) for job in jobs]

    def _run_next(self) -> None:
        job = self._queue.take()
        if job is None:
            return
        try:
            job.future.set_result(self.decode(job.data, job.abandoned, job.deadline))
        except BaseException as e:
            job.future.set_exception(e)

    @contextmanager
    def tracking(self, n: int) -> Iterator[None]:
        """Count n images as in progress for the duration."""
        self.in_progress += n
        try:
            yield
        finally:
            self.in_progress -= n
            self._on_done()

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Other CPU work of a request (parsing a big JSON body, base64) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


@dataclass(slots=True)
class _Job:
    future: Future[Decoded | None]
    data: bytes
    abandoned: threading.Event
    deadline: float


class _FairQueue:
    """Decode jobs taken in turn across requests, not first come first served: one request
    of 16 large images delays another request's image by about one decode, not sixteen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ring: deque[deque[_Job]] = deque()  # one queue per request, in turn

    def put(self, jobs: list[_Job]) -> None:
        with self._lock:
            self._ring.append(deque(jobs))

    def take(self) -> _Job | None:
        """The next job in turn, skipping cancelled ones; None when there is none."""
        with self._lock:
            while self._ring:
                jobs = self._ring.popleft()
                job = jobs.popleft()
                if jobs:
                    self._ring.append(jobs)
                if job.future.set_running_or_notify_cancel():
                    return job
        return None
