"""Pieces every inference route shares: state access, decoding off the loop, queueing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from ..inference.batcher import BatcherClosedError, DeadlineExceededError, QueueFullError
from ..inference.preprocess import ImageError, preprocess
from ..state import ServiceState
from .errors import ApiError


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.mltag
    return state


def get_ready_state(request: Request) -> ServiceState:
    state = get_state(request)
    if not state.ready or state.draining or state.batcher is None:
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


def _preprocess_timed(state: ServiceState, data: bytes) -> np.ndarray | ImageError:
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
    state: ServiceState, payloads: list[bytes]
) -> list[np.ndarray | ImageError]:
    """Decode + resize every image in the decode pool; per-image errors are returned."""
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(state.decode_pool, _preprocess_timed, state, p) for p in payloads]
    return list(await asyncio.gather(*jobs))


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (if it comes).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@contextmanager
def admitted(state: ServiceState, n: int) -> Iterator[None]:
    """Reserve room for n images in the queue, or refuse now: 429 (full) / 503 (draining)."""
    assert state.batcher is not None
    try:
        with state.batcher.admit(n):
            yield
    except QueueFullError as e:
        state.metrics.rejected.labels("queue_full").inc()
        raise ApiError(
            429,
            "queue_full",
            f"the server is at capacity ({state.batcher.max_queue_size} images queued); "
            f"retry after {e.retry_after_s} s",
            headers={"Retry-After": str(e.retry_after_s)},
        ) from None
    except BatcherClosedError:
        state.metrics.rejected.labels("draining").inc()
        raise ApiError(503, "draining", "the service is shutting down") from None


async def infer_samples(
    request: Request, state: ServiceState, samples: list[np.ndarray], deadline: float
) -> list[np.ndarray]:
    """Queue samples for the batcher and wait for their probabilities. Call inside
    `admitted(state, n)`. 504 when the deadline passes first; if the client goes away, the
    queued samples are dropped before they are computed.
    """
    if not samples:
        return []
    assert state.batcher is not None
    rejected = state.metrics.rejected
    try:
        futures = state.batcher.submit(samples, deadline)
    except BatcherClosedError:
        rejected.labels("draining").inc()
        raise ApiError(503, "draining", "the service is shutting down") from None
    gathered: asyncio.Future[Any] = asyncio.gather(*futures)
    watcher: asyncio.Future[Any] = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait(
            [gathered, watcher],
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        watcher.cancel()
    if gathered in done:
        try:
            return list(gathered.result())
        except DeadlineExceededError:
            rejected.labels("deadline").inc()
            raise ApiError(
                504, "deadline_exceeded", "the request's deadline passed while queued"
            ) from None
        except Exception as e:
            raise ApiError(500, "inference_failed", f"model inference failed: {e}") from e
    for fut in futures:  # still queued ones are skipped by the batcher
        fut.cancel()
    gathered.cancel()
    if watcher in done:
        rejected.labels("client_gone").inc()
        raise ApiError(499, "client_closed_request", "the client went away")
    rejected.labels("deadline").inc()
    raise ApiError(504, "deadline_exceeded", "the request's deadline passed before it was computed")


def image_error(e: ImageError) -> ApiError:
    return ApiError(e.status, e.code, str(e))
