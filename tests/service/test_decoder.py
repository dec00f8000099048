"""The decoder serves requests in turn: a request of many large images cannot make another
request's image wait behind all of them."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from service.inference.decoder import _FairQueue, _Job


def jobs(name: str, n: int) -> list[_Job]:
    return [_Job(Future(), f"{name}{i}".encode(), threading.Event(), 0.0) for i in range(n)]


def test_jobs_are_taken_in_turn_across_requests() -> None:
    queue = _FairQueue()
    big, small, other = jobs("a", 4), jobs("b", 1), jobs("c", 2)
    for request in (big, small, other):
        queue.put(request)
    order = []
    while (job := queue.take()) is not None:
        order.append(job.data.decode())
    assert order == ["a0", "b0", "c0", "a1", "c1", "a2", "a3"]


def test_cancelled_jobs_are_skipped() -> None:
    queue = _FairQueue()
    request = jobs("a", 3)
    request[0].future.cancel()
    queue.put(request)
    taken = queue.take()
    assert taken is not None and taken.data == b"a1" and taken.future.running()
