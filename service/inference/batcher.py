"""Dynamic batching: one queue, one consumer task, a future per image, `workers` model
threads (several batches run at once on a CPU: ONNX Runtime runs concurrent batches on one
session, and on a few cores two small batches side by side cost less per image than one
large batch over two threads; benchmarks/RESULTS.md#batching-plan).

Flushes when `max_batch_size` images wait or when the oldest has waited `max_delay_s`
(0 = no fixed delay: while the model threads are busy, arrivals pile up and form the next
batch, as in Triton). Optionally (`wait_for_decoding`) an idle model waits for images still being
decoded (`incoming()`), up to one model run's time: when decoding is the bottleneck (large
photos) that forms real batches instead of runs of one. `run_alone` runs one job on the idle
model thread directly (the service's fast path for a lone image). Items whose future is
already done (client gone, request timed out) are dropped before they are computed; items past
their deadline fail with DeadlineExceededError. How many images may wait is admission's
business (`admission.py`), not the batcher's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..metrics import ModelMetrics

log = logging.getLogger("mltag.batcher")
T = TypeVar("T")


class DeadlineExceededError(Exception):
    pass


class BatcherClosedError(Exception):
    pass


@dataclass(slots=True)
class _Item:
    sample: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float
    deadline: float


def _nothing_incoming() -> int:
    return 0


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_delay_s: float,
        metrics: ModelMetrics | None = None,
        thread_initializer: Callable[[], None] | None = None,
        wait_for_decoding: bool = False,
        incoming: Callable[[], int] = _nothing_incoming,
        total_depth: Callable[[], int] | None = None,
        workers: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.run_one = run_batch  # what `run_alone` runs its one sample on
        self.max_batch_size = max_batch_size
        self.workers = max(1, workers)
        self.max_delay_s = max_delay_s
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="mltag-model",
            initializer=thread_initializer,
        )  # fmt: skip
        self._running = 0  # model threads working through the queue
        self._take_lock = threading.Lock()  # the loop and the model threads take batches
        self._runs: set[asyncio.Task[None]] = set()
        self._alone = False  # run_alone holds a model thread
        self.wait_for_decoding = wait_for_decoding
        self._incoming = incoming  # images being decoded: they will be submitted soon
        # What the queue-depth gauge shows: this queue, or the model's queues together (a
        # model with an explain graph has two batchers sharing its metrics).
        self._total_depth = total_depth or self._own_depth
        self.batch_seconds = 0.0  # EWMA of the time per model run (one worker's)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        """A model thread is computing (a batch, or a `run_alone` job)."""
        return self._running > 0 or self._alone

    @property
    def idle(self) -> bool:
        return not self._queue and not self.running

    @property
    def free(self) -> bool:
        """Nothing queued or running, open, and no fixed batching delay (a configured delay is
        a request to wait for company): `run_alone` may take the model thread now."""
        return self.idle and self.max_delay_s == 0 and not self._closing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="mltag-batcher")

    def on_crash(self, callback: Callable[[], None]) -> None:
        """Call `callback` if the consumer task ever dies of an exception (a bug)."""

        def check(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("the batcher stopped", exc_info=task.exception())
                callback()

        assert self._task is not None
        self._task.add_done_callback(check)

    def nudge(self) -> None:
        """Something the batcher waits for changed (a decode finished)."""
        self._wakeup.set()

    def submit(
        self, samples: Sequence[np.ndarray], deadline: float
    ) -> list[asyncio.Future[np.ndarray]]:
        """Queue the samples; `deadline` is on time.monotonic()."""
        if self._closing:
            raise BatcherClosedError("the service is shutting down")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[np.ndarray]] = []
        for sample in samples:
            fut: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append(_Item(sample, fut, now, deadline))
            futures.append(fut)
        self._set_depth()
        self._wakeup.set()
        return futures

    async def run_alone(
        self, prepare: Callable[[], np.ndarray | T]
    ) -> tuple[np.ndarray | T, np.ndarray | None]:
        """`prepare` (a decode) and a model run of its one sample in a single trip to the
        model thread, skipping two hand-offs through the event loop; the model also runs
        faster on the thread that just decoded than on one woken from sleep
        (benchmarks/RESULTS.md, idle fast path). Returns (prepare's result, probabilities or
        None when prepare gave no sample). Call only when `free`; images queued meanwhile
        form the next batch."""
        loop = asyncio.get_running_loop()
        self._alone = True

        def job() -> tuple[np.ndarray | T, np.ndarray | None, float]:
            sample = prepare()
            if not isinstance(sample, np.ndarray):
                return sample, None, 0.0
            t0 = time.monotonic()
            probs = self.run_one(sample[np.newaxis])[0]
            return sample, probs, time.monotonic() - t0

        def finished(_: object) -> None:  # when the thread is done, even if nobody waits
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._alone_finished)

        work = self._executor.submit(job)
        work.add_done_callback(finished)
        sample, probs, elapsed = await asyncio.wrap_future(work)
        if probs is not None:
            self._record_batch(1, elapsed)
            if self._metrics is not None:
                self._metrics.queue_wait.observe(0.0)
        return sample, probs

    def _alone_finished(self) -> None:
        self._alone = False
        self._wakeup.set()  # anything queued meanwhile runs now

    async def stop(self) -> None:
        """Finish everything queued, then stop the consumer and the model thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _own_depth(self) -> int:
        return len(self._queue)

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._total_depth())

    async def _wait_for_fuller_batch(self) -> None:
        await self._wait_for_arrivals(self._queue[0].enqueued + self.max_delay_s, lambda: True)

    async def _wait_for_decoding(self) -> None:
        """Decoding is the bottleneck (images still decoding, the model idle): wait for them,
        up to one model run's time, instead of running a small batch that costs more CPU per
        image. The decode threads use the cores meanwhile, so no capacity is lost."""
        give_up = time.monotonic() + self.batch_seconds
        await self._wait_for_arrivals(give_up, lambda: self._incoming() > 0)

    async def _wait_for_arrivals(self, until: float, worth_it: Callable[[], bool]) -> None:
        """Let the batch grow while `worth_it()`, until `until`, the batch is full, or the
        most urgent queued image would otherwise miss its deadline."""
        while (
            worth_it()
            and self._queue
            and len(self._queue) < self.max_batch_size
            and not self._closing
        ):
            margin = max(1.5 * self.batch_seconds, 0.01)  # time to run and answer
            urgent = min(item.deadline for item in self._queue) - margin
            remaining = min(until, urgent) - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> tuple[list[_Item], list[_Item]]:
        """(the next batch, items whose deadline passed while queued). Safe on a model
        thread: takers hold a lock, and futures are only read here (the caller fails the
        expired ones on the event loop)."""
        batch: list[_Item] = []
        expired: list[_Item] = []
        now = time.monotonic()
        with self._take_lock:
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                if item.future.done():  # cancelled: the client went away or its request timed out
                    continue
                if item.deadline <= now:
                    expired.append(item)
                    continue
                batch.append(item)
                if self._metrics is not None:
                    self._metrics.queue_wait.observe(now - item.enqueued)
        self._set_depth()
        return batch, expired

    @staticmethod
    def _fail_expired(expired: list[_Item]) -> None:
        for item in expired:
            if not item.future.done():
                item.future.set_exception(DeadlineExceededError("deadline passed while queued"))

    def _threads_busy(self) -> bool:
        return self._running + self._alone >= self.workers

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue or self._threads_busy():
                if self._closing and not self._queue and not self._running:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_delay_s > 0:
                await self._wait_for_fuller_batch()
            elif self.wait_for_decoding and self._incoming():
                await self._wait_for_decoding()
            batch, expired = self._take_batch()
            self._fail_expired(expired)
            if not batch:
                continue
            self._running += 1
            task = loop.create_task(self._run(batch))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _run(self, batch: list[_Item]) -> None:
        """A model thread works from `batch` until the queue is empty (`_work`)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._work, batch, loop)
        except Exception:  # a bug in the worker loop; a batch's own failure is delivered
            log.exception("a model thread stopped")
        finally:
            self._running -= 1
            self._wakeup.set()  # a model thread is free

    def _work(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        """On a model thread: run `batch`, hand its results to the loop, and take the next
        batch here rather than wait for the loop to hand one over (each hand-off through a
        busy event loop left a core idle: benchmarks/RESULTS.md#batching-plan). Only when
        the loop would take it at once: no fixed delay, no waiting for decodes."""
        while batch:
            t0 = time.monotonic()
            try:
                probs, error = self._stack_and_run([item.sample for item in batch]), None
            except Exception as e:
                probs, error = None, e
            loop.call_soon_threadsafe(self._deliver, batch, probs, error, time.monotonic() - t0)
            if self.max_delay_s > 0 or self.wait_for_decoding:
                return
            batch, expired = self._take_batch()
            if expired:
                loop.call_soon_threadsafe(self._fail_expired, expired)

    def _deliver(
        self, batch: list[_Item], probs: np.ndarray | None, error: Exception | None, took: float
    ) -> None:
        """On the loop: a batch's results (or its failure) to every waiter."""
        if probs is None:  # fan the failure out to every waiter of this batch
            log.error("model run failed for a batch of %d", len(batch), exc_info=error)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error or RuntimeError("model run failed"))
            return
        self._record_batch(len(batch), took)
        for item, row in zip(batch, probs, strict=True):
            if not item.future.done():
                item.future.set_result(row)

    def _record_batch(self, size: int, elapsed: float) -> None:
        self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * elapsed
        if self._metrics is not None:
            self._metrics.inference_duration.observe(elapsed)
            self._metrics.batch_size.observe(size)

    def _stack_and_run(self, samples: list[np.ndarray]) -> np.ndarray:
        out = self._run_batch(np.stack(samples))
        if out.shape[0] != len(samples):
            raise RuntimeError(f"model returned {out.shape[0]} rows for {len(samples)} inputs")
        return out
