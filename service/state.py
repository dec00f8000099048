"""What one running service holds: settings, metrics, the served model, lifecycle flags."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .api.uploads import Uploads
from .inference.registry import ModelRegistry
from .inference.served_model import ServedModel
from .metrics import ServiceMetrics
from .settings import Settings

log = logging.getLogger("mltag.state")


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    registry: ModelRegistry | None = None  # set by the app's lifespan once loaded and started
    ready: bool = False
    draining: bool = False
    drain_started: float = 0.0
    in_flight: int = 0
    uploads: Uploads = field(init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.uploads = Uploads(
            s.max_upload_mb_in_flight * 2**20, s.min_upload_bytes_per_s, s.upload_grace_s
        )

    def track(self, change: int) -> None:
        """Count the calling request in (+1) or out (-1) of the work in flight; its task can
        then be abandoned at the drain timeout."""
        self.in_flight += change
        self.metrics.in_flight.inc(change)
        task = asyncio.current_task()
        if task is not None:
            (self._tasks.add if change > 0 else self._tasks.discard)(task)

    def abandon_in_flight(self) -> int:
        """Cancel every request still in flight (after the drain timeout): each answers a JSON
        503 and ends, so the server stops without cancelling anything itself."""
        for task in self._tasks:
            task.cancel("drain timeout")
        return len(self._tasks)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready and not self.draining else 0)

    @property
    def serving(self) -> ModelRegistry | None:
        """The models when requests may use them: loaded, warmed, not draining."""
        return self.registry if self.ready and not self.draining else None

    @property
    def default_model(self) -> ServedModel | None:
        return self.registry.default if self.registry is not None else None

    def begin_drain(self) -> None:
        """Stop admitting work: /readyz turns 503, new requests get 503, accepted ones finish."""
        if not self.draining:
            log.info("draining: refusing new requests, finishing %d in flight", self.in_flight)
            self.draining = True
            self.drain_started = time.monotonic()
            self.metrics.ready.set(0)

    def drained(self) -> bool:
        """True once nothing accepted is left, or the drain timeout has passed."""
        if not self.draining:
            return False
        idle = self.in_flight == 0 and (self.registry is None or self.registry.idle)
        timed_out = time.monotonic() - self.drain_started > self.settings.drain_timeout_s
        if timed_out and not idle:
            log.warning("drain timeout: %d requests still in flight", self.in_flight)
        return idle or timed_out
