"""Request bodies in flight, process-wide: their bytes count against a budget until their
request ends, and each must keep arriving at a minimum average rate once a grace period is
over. A client uploading a byte a second (slowloris) is cut off with 408 within seconds
instead of holding its connection, memory and queue slot until the request's deadline."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class Uploads:
    def __init__(self, budget_bytes: int, min_rate: float, grace_s: float) -> None:
        self.budget_bytes = budget_bytes
        self.min_rate = min_rate  # bytes per second, on average, after the grace
        self.grace_s = grace_s
        self.bytes_in_flight = 0

    @property
    def full(self) -> bool:
        return self.bytes_in_flight >= self.budget_bytes

    def start(self, on_too_slow: Callable[[], object]) -> Upload:
        """Watch one request's body; `on_too_slow` ends the request (it is called at most
        once, from the event loop)."""
        return Upload(self, on_too_slow)


class Upload:
    def __init__(self, uploads: Uploads, on_too_slow: Callable[[], object]) -> None:
        self._uploads = uploads
        self._on_too_slow = on_too_slow
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self.received = 0
        self.complete = False
        self.too_slow = False
        # The first check comes at a random point of the second after the grace: connections
        # that arrived together (an attack) are not all cut off in one loop iteration.
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            uploads.grace_s + 1.0 + random.random(), self._check
        )

    def add(self, nbytes: int, more: bool) -> None:
        """Bytes of the body arrived; `more` is False with the last of them."""
        self.received += nbytes
        self._uploads.bytes_in_flight += nbytes
        if not more:
            self.complete = True
            self._stop_timer()

    def close(self) -> None:
        """The request ended: its body's bytes leave the budget."""
        self._stop_timer()
        self._uploads.bytes_in_flight -= self.received
        self.received = 0

    def _check(self) -> None:
        self._timer = None
        if self.complete:
            return
        elapsed = self._loop.time() - self._start
        if self.received < self._uploads.min_rate * (elapsed - self._uploads.grace_s):
            self.too_slow = True
            self._on_too_slow()
        else:
            self._timer = self._loop.call_later(1.0, self._check)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
