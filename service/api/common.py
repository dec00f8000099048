"""Pieces every inference route shares: state access, admission, the request guard
(deadline + disconnect), decoding off the loop, queueing."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, Request

from ..inference.batcher import (
    BatcherClosedError,
    DeadlineExceededError,
    QueueFullError,
    Reservation,
)
from ..inference.preprocess import ImageError, preprocess
from ..state import ServiceState
from .errors import ApiError

T = TypeVar("T")


# Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# thread hop (and a thread to schedule on a busy machine) on every request.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.mltag
    return state


async def get_ready_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.mltag
    if not state.ready or state.draining or state.batcher is None:
        state.metrics.rejected.labels("not_ready").inc()
        raise ApiError(503, "not_ready", "the model is not ready (loading or shutting down)")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
ReadyStateDep = Annotated[ServiceState, Depends(get_ready_state)]


def request_deadline(request: Request, state: ServiceState, timeout_ms: float | None) -> float:
    """Monotonic deadline: the server's default, which a client may only shorten."""
    start: float = getattr(request.state, "start", None) or time.monotonic()
    budget = state.settings.request_timeout_s
    if timeout_ms is not None:
        budget = min(budget, timeout_ms / 1000.0)
    return start + budget


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (if it comes).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class RequestGuard:
    """Runs a request's stages against its deadline and its client's connection: when either
    runs out, the stage is abandoned (its pending work cancelled) and the request ends with
    504 (or 408 while the body is still arriving) or 499."""

    def __init__(self, request: Request, state: ServiceState, deadline: float) -> None:
        self.request = request
        self.state = state
        self.deadline = deadline
        self.abandoned = threading.Event()  # seen by decode workers that have not started
        self._watcher: asyncio.Future[None] | None = None

    async def read_body(self, read: Awaitable[T]) -> T:
        """Receive the body (or form) under the deadline, then start watching for disconnect."""
        result = await self.run(read, timeout_status=408)
        self._watcher = asyncio.ensure_future(_wait_for_disconnect(self.request))
        return result

    async def run(
        self,
        work: Awaitable[T],
        on_abandon: Callable[[], None] | None = None,
        timeout_status: int = 504,
    ) -> T:
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        waiters: set[asyncio.Future[Any]] = {task}
        if self._watcher is not None:
            waiters.add(self._watcher)
        remaining = max(0.0, self.deadline - time.monotonic())
        done, _ = await asyncio.wait(
            waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        self.abandoned.set()
        task.cancel()
        task.add_done_callback(_retrieve)  # no "exception was never retrieved" noise
        if on_abandon is not None:
            on_abandon()
        rejected = self.state.metrics.rejected
        if self._watcher is not None and self._watcher in done:
            rejected.labels("client_gone").inc()
            raise ApiError(499, "client_closed_request", "the client went away")
        rejected.labels("deadline").inc()
        if timeout_status == 408:
            raise ApiError(408, "request_timeout", "the request body did not arrive in time")
        raise ApiError(504, "deadline_exceeded", "the request's deadline passed before it finished")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


def queue_full_message(max_queue_size: int, retry_after_s: int) -> str:
    return (
        f"the server is at capacity ({max_queue_size} images queued or being decoded); "
        f"retry after {retry_after_s} s"
    )


def held_reservation(request: Request) -> Reservation | None:
    """The queue slot the middleware reserved for this inference request, if any."""
    held: Reservation | None = getattr(request.state, "reservation", None)
    return held


@contextmanager
def admitted(state: ServiceState, n: int, held: Reservation | None = None) -> Iterator[Reservation]:
    """Room for n images in the queue, or refuse now: 429 (full) / 503 (draining). `held` is
    room the middleware reserved when the request arrived, before its body: it is resized to
    n, so a single-image request admitted at arrival is never refused after its upload."""
    batcher = state.batcher
    assert batcher is not None
    try:
        if held is not None:
            batcher.resize(held, n)
            reservation = held
        else:
            reservation = batcher.reserve(n)
    except QueueFullError as e:
        state.metrics.rejected.labels("queue_full").inc()
        raise ApiError(
            429,
            "queue_full",
            queue_full_message(batcher.max_queue_size, e.retry_after_s),
            headers={"Retry-After": str(e.retry_after_s)},
        ) from None
    except BatcherClosedError:
        state.metrics.rejected.labels("draining").inc()
        raise ApiError(503, "draining", "the service is shutting down") from None
    try:
        yield reservation
    finally:
        batcher.release(reservation)


def _preprocess_timed(
    state: ServiceState, data: bytes, guard: RequestGuard
) -> np.ndarray | ImageError | None:
    if guard.abandoned.is_set() or time.monotonic() > guard.deadline:
        return None  # nobody is waiting for this any more: don't spend a core on it
    assert state.artifact is not None
    t0 = time.perf_counter()
    try:
        sample = preprocess(
            data, state.artifact.manifest.preprocessing, state.settings.max_image_pixels
        )
    except ImageError as e:
        return e
    state.metrics.decode_duration.observe(time.perf_counter() - t0)
    return sample


async def decode_images(
    state: ServiceState, payloads: list[bytes], guard: RequestGuard
) -> list[np.ndarray | ImageError]:
    """Decode + resize every image in the decode pool; per-image errors are returned."""
    loop = asyncio.get_running_loop()
    jobs = [
        loop.run_in_executor(state.decode_pool, _preprocess_timed, state, p, guard)
        for p in payloads
    ]

    def cancel_pending() -> None:
        for job in jobs:
            job.cancel()  # not-yet-started decodes are dropped from the pool's queue

    assert state.batcher is not None
    with state.batcher.decoding(len(jobs)):
        results = await guard.run(asyncio.gather(*jobs), on_abandon=cancel_pending)
    if any(r is None for r in results):  # skipped: the deadline passed as they started
        state.metrics.rejected.labels("deadline").inc()
        raise ApiError(504, "deadline_exceeded", "the request's deadline passed while decoding")
    return [r for r in results if r is not None]


async def run_in_pool(state: ServiceState, fn: Callable[..., T], *args: Any) -> T:
    """CPU work (parsing big JSON, base64) off the event loop, in the decode pool."""
    return await asyncio.get_running_loop().run_in_executor(state.decode_pool, fn, *args)


async def infer_samples(
    state: ServiceState, samples: list[np.ndarray], guard: RequestGuard, reservation: Reservation
) -> list[np.ndarray]:
    """Queue samples (room reserved by `admitted`) and wait for their probabilities.
    Abandoned (deadline, disconnect) samples still queued are dropped, not computed."""
    if not samples:
        return []
    assert state.batcher is not None
    try:
        futures = state.batcher.submit(samples, guard.deadline, reservation)
    except BatcherClosedError:
        state.metrics.rejected.labels("draining").inc()
        raise ApiError(503, "draining", "the service is shutting down") from None

    def cancel_queued() -> None:
        for fut in futures:
            fut.cancel()

    results = await guard.run(
        asyncio.gather(*futures, return_exceptions=True), on_abandon=cancel_queued
    )
    for r in results:
        if isinstance(r, DeadlineExceededError):
            state.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", "the request's deadline passed while queued")
        if isinstance(r, BaseException):
            raise ApiError(500, "inference_failed", f"model inference failed: {r}") from r
    return [r for r in results if isinstance(r, np.ndarray)]


async def decode_and_infer(
    state: ServiceState, payloads: list[bytes], guard: RequestGuard, reservation: Reservation
) -> tuple[list[np.ndarray | ImageError], list[np.ndarray]]:
    """Decode every image, then run the decoded ones through the model (room reserved by
    `admitted`). Returns each image's decoded array or error, and the probabilities of the
    decoded ones, in order. A single image on an otherwise idle service takes the batcher's
    fast path: decode and model in one trip to the model thread."""
    batcher = state.batcher
    assert batcher is not None
    if len(payloads) == 1 and batcher.can_run_alone(reservation):
        prepare = functools.partial(_preprocess_timed, state, payloads[0], guard)
        try:
            sample, probs = await guard.run(batcher.run_alone(prepare, reservation))
        except ApiError:
            raise
        except Exception as e:
            raise ApiError(500, "inference_failed", f"model inference failed: {e}") from e
        if sample is None:  # skipped: the deadline passed as it started
            state.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", "the request's deadline passed while decoding")
        return [sample], [] if probs is None else [probs]
    decoded = await decode_images(state, payloads, guard)
    samples = [d for d in decoded if not isinstance(d, ImageError)]
    return decoded, await infer_samples(state, samples, guard, reservation)


def image_error(e: ImageError) -> ApiError:
    return ApiError(e.status, e.code, str(e))
