"""The steps an inference request goes through, as small functions the routes call in order:
parse -> admit -> read -> decode -> infer -> respond. `RequestGuard` runs each waiting step
against the request's deadline and its client's connection."""

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

from mltag_artifact.preprocess import ImageError

from ..inference.admission import AdmissionClosedError, QueueFullError, Reservation
from ..inference.batcher import BatcherClosedError, DeadlineExceededError
from ..inference.decoder import Decoded
from ..inference.registry import ModelNotFoundError
from ..inference.served_model import ServedModel
from ..state import ServiceState
from .errors import DRAINING, ApiError, queue_full_message

T = TypeVar("T")


# Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# thread hop (and a thread to schedule on a busy machine) on every request.
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.mltag
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def ready_model(
    request: Request, name: str | None = None, version: str | None = None
) -> ServedModel:
    """The version serving model `name` (the default model when None): the one the request
    resolved when it was admitted, if it was; 503 while loading or draining, 404 when there
    is no such model or version."""
    state: ServiceState = request.app.state.mltag
    registry = state.serving
    if registry is None:
        state.metrics.rejected.labels("not_ready").inc()
        raise ApiError(503, "not_ready", "the model is not ready (loading or shutting down)")
    held: ServedModel | None = request.scope["state"].get("model")
    if held is not None:
        return held
    try:
        return registry.resolve(name, version)
    except ModelNotFoundError as e:
        raise ApiError(404, "model_not_found", str(e)) from None


def _metrics(request: Request) -> Any:
    return request.app.state.mltag.metrics


def request_deadline(request: Request, timeout_ms: float | None) -> float:
    """Monotonic deadline: the server's default, which a client may only shorten."""
    start: float = getattr(request.state, "start", None) or time.monotonic()
    budget = request.app.state.mltag.settings.request_timeout_s
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
    499, or 504 — or 408 while the body is still arriving, unless the client's own timeout_ms
    set the deadline: a client's timeout is a 504 at every stage."""

    def __init__(self, request: Request, deadline: float, client_deadline: bool = False) -> None:
        self.request = request
        self.deadline = deadline
        self.client_deadline = client_deadline
        self.abandoned = threading.Event()  # seen by decode workers that have not started
        self._watcher: asyncio.Future[None] | None = None

    async def read_body(self, read: Awaitable[T]) -> T:
        """Receive the body (or form) under the deadline, then start watching for disconnect."""
        result = await self.run(read, timeout_status=504 if self.client_deadline else 408)
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
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the request itself is cancelled (shutdown)
            self._abandon(task, on_abandon)
            raise
        if task in done:
            return task.result()
        self._abandon(task, on_abandon)
        rejected = _metrics(self.request).rejected
        if self._watcher is not None and self._watcher in done:
            rejected.labels("client_gone").inc()
            raise ApiError(499, "client_closed_request", "the client went away")
        rejected.labels("deadline").inc()
        if timeout_status == 408:
            raise ApiError(408, "request_timeout", "the request body did not arrive in time")
        raise ApiError(504, "deadline_exceeded", "the request's deadline passed before it finished")

    def _abandon(self, task: asyncio.Future[Any], on_abandon: Callable[[], None] | None) -> None:
        """Stop waiting for `task`: cancel it and what it started (decodes not begun, samples
        still queued), and retrieve its outcome so nothing is left unobserved."""
        self.abandoned.set()
        task.cancel()
        task.add_done_callback(_retrieve)  # no "exception was never retrieved" noise
        if on_abandon is not None:
            on_abandon()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


def _deadline_passed(request: Request, stage: str) -> ApiError:
    _metrics(request).rejected.labels("deadline").inc()
    return ApiError(504, "deadline_exceeded", f"the request's deadline passed while {stage}")


def _draining(request: Request) -> ApiError:
    _metrics(request).rejected.labels("draining").inc()
    return ApiError(503, "draining", DRAINING)


@contextmanager
def admitted(request: Request, model: ServedModel, n: int) -> Iterator[Reservation]:
    """Room for the request's n images, or refuse now: 429 (full) / 503 (draining). The room
    the middleware reserved when the request arrived is resized to n, so a single-image
    request admitted then is never refused after its upload. Room not handed to the queue
    is given back on exit."""
    admission = model.admission
    held: Reservation | None = request.scope["state"].get("reservation")
    try:
        if held is None:
            held = admission.reserve(n)
        else:
            admission.uploaded(held)
            admission.resize(held, n)
    except QueueFullError as e:
        _metrics(request).rejected.labels("queue_full").inc()
        raise ApiError(
            429,
            "queue_full",
            queue_full_message(admission.max_queue_size, e.retry_after_s),
            headers={"Retry-After": str(e.retry_after_s)},
        ) from None
    except AdmissionClosedError:
        raise _draining(request) from None
    try:
        yield held
    finally:
        admission.release(held)


async def decode_images(
    request: Request, model: ServedModel, payloads: list[bytes], guard: RequestGuard
) -> list[Decoded]:
    """Decode + resize every image in the decode pool; per-image errors are returned."""
    jobs = model.decoder.submit(payloads, guard.abandoned, guard.deadline)

    def cancel_pending() -> None:
        for job in jobs:
            job.cancel()  # not-yet-started decodes are dropped from the pool's queue

    with model.decoder.tracking(len(jobs)):
        results = await guard.run(asyncio.gather(*jobs), on_abandon=cancel_pending)
    if any(r is None for r in results):  # skipped: the deadline passed as they started
        raise _deadline_passed(request, "decoding")
    return [r for r in results if r is not None]


async def infer_samples(
    request: Request,
    model: ServedModel,
    samples: list[np.ndarray],
    guard: RequestGuard,
    reservation: Reservation,
    explain: bool = False,
) -> list[np.ndarray]:
    """Queue the samples (their room moves from the reservation to the queue) and wait for
    their probabilities (or, with `explain`, the explain graph's rows: `explain_rows`).
    Abandoned samples still queued are dropped, not computed."""
    if not samples:
        return []
    batcher = model.explain_batcher if explain else model.batcher
    if batcher is None:
        raise no_heatmaps(model)
    model.admission.hand_over(reservation, len(samples))
    try:
        futures = batcher.submit(samples, guard.deadline)
    except BatcherClosedError:
        raise _draining(request) from None

    def cancel_queued() -> None:
        for fut in futures:
            fut.cancel()

    results = await guard.run(
        asyncio.gather(*futures, return_exceptions=True), on_abandon=cancel_queued
    )
    for r in results:
        if isinstance(r, DeadlineExceededError):
            raise _deadline_passed(request, "queued")
        if isinstance(r, BaseException):
            raise ApiError(500, "inference_failed", f"model inference failed: {r}") from r
    return [r for r in results if isinstance(r, np.ndarray)]


async def decode_and_infer(
    request: Request,
    model: ServedModel,
    payloads: list[bytes],
    guard: RequestGuard,
    reservation: Reservation,
    explain: bool = False,
) -> tuple[list[Decoded], list[np.ndarray]]:
    """Each image's decoded sample or error, and the probabilities (with `explain`, the
    explain graph's rows) of the decoded ones, in order. A lone image on an otherwise idle
    service takes the fast path: decoded and run in one trip to the model thread."""
    if not explain and len(payloads) == 1 and model.can_run_alone(reservation):
        model.admission.hand_over(reservation, 1)  # like an image taken into a batch
        decode = functools.partial(
            model.decoder.decode, payloads[0], guard.abandoned, guard.deadline
        )
        try:
            sample, probs = await guard.run(model.batcher.run_alone(decode))
        except ApiError:
            raise
        except Exception as e:
            raise ApiError(500, "inference_failed", f"model inference failed: {e}") from e
        if sample is None:  # skipped: the deadline passed as it started
            raise _deadline_passed(request, "decoding")
        return [sample], [] if probs is None else [probs]
    decoded = await decode_images(request, model, payloads, guard)
    samples = [d for d in decoded if not isinstance(d, ImageError)]
    return decoded, await infer_samples(request, model, samples, guard, reservation, explain)


def no_heatmaps(model: ServedModel) -> ApiError:
    """Asked for heatmaps of a model exported without them."""
    return ApiError(
        422,
        "no_heatmap_output",
        f"model {model.name!r} version {model.version!r} has no heatmap output: its artifact "
        "was exported without an explain graph (manifest onnx.explain). Re-export it from its "
        "training run with `mltag-train export --run RUN --output DIR` (heatmaps are on by "
        "default), or ask without explain.",
    )
