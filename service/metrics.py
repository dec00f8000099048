"""Every Prometheus metric the service exports, defined in one place.

Conventions: base units (seconds), `_total` on counters, histograms (they aggregate across
replicas), labels with small fixed cardinality. One registry per app so tests can build
several apps in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

REJECT_REASONS = (
    "queue_full",
    "deadline",
    "draining",
    "not_ready",
    "client_gone",
    "too_large",
    "bad_request",
    "unauthorized",
    "slow_upload",
    "uploads_full",
)


MODEL_LABELS = ["model", "version"]


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "mltag_request_duration_seconds",
            "HTTP request latency, by endpoint (route template) and status class.",
            ["endpoint", "status_class"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._define_model_metrics(r)
        self.in_flight = Gauge(
            "mltag_requests_in_flight", "HTTP requests being handled.", registry=r
        )
        self.rejected = Counter(
            "mltag_requests_rejected_total",
            "Requests (or images) refused, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.ready = Gauge("mltag_ready", "1 when loaded, warmed and not draining.", registry=r)

    def _define_model_metrics(self, r: CollectorRegistry) -> None:
        """The metrics of each served model version: labels model and version."""
        self.queue_wait = Histogram(
            "mltag_queue_wait_seconds",
            "Time an image waited in the batch queue before its batch started.",
            MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "mltag_inference_duration_seconds",
            "Model run time per batch.",
            MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_duration = Histogram(
            "mltag_decode_duration_seconds",
            "Decode + resize time per image.",
            MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mltag_batch_size", "Images per model run.", MODEL_LABELS, buckets=_BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "mltag_queue_depth", "Images waiting in the batch queue.", MODEL_LABELS, registry=r
        )
        self.images = Counter(
            "mltag_images_processed_total",
            "Images handled, by outcome (ok = tagged, error = per-image error).",
            [*MODEL_LABELS, "outcome"],
            registry=r,
        )
        self.model_info = Gauge(
            "mltag_model_info",
            "1 for each model version served, with the execution provider really in use.",
            [*MODEL_LABELS, "provider"],
            registry=r,
        )
        self.load_failures = Counter(
            "mltag_model_load_failures_total",
            "Model versions that failed validation or warm-up (never served), by model.",
            ["model"],
            registry=r,
        )

    def for_model(self, name: str, version: str, provider: str) -> ModelMetrics:
        """The metrics of one served model version (labels model, version)."""
        labels = (name, version)
        self.model_info.labels(*labels, provider).set(1)
        for outcome in ("ok", "error"):
            self.images.labels(*labels, outcome)
        return ModelMetrics(
            queue_wait=self.queue_wait.labels(*labels),
            inference_duration=self.inference_duration.labels(*labels),
            decode_duration=self.decode_duration.labels(*labels),
            batch_size=self.batch_size.labels(*labels),
            queue_depth=self.queue_depth.labels(*labels),
            images_ok=self.images.labels(*labels, "ok"),
            images_error=self.images.labels(*labels, "error"),
            _forget=lambda: self._forget(name, version, provider),
        )

    def _forget(self, name: str, version: str, provider: str) -> None:
        """A retired version's series go (a stale histogram would look like a live one)."""
        for metric in (self.queue_wait, self.inference_duration, self.decode_duration,
                       self.batch_size, self.queue_depth):  # fmt: skip
            with contextlib.suppress(KeyError):
                metric.remove(name, version)
        for outcome in ("ok", "error"):
            with contextlib.suppress(KeyError):
                self.images.remove(name, version, outcome)
        with contextlib.suppress(KeyError):
            self.model_info.remove(name, version, provider)


@dataclass(frozen=True)
class ModelMetrics:
    """One served model version's metrics, already labelled."""

    queue_wait: Histogram
    inference_duration: Histogram
    decode_duration: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    images_ok: Counter
    images_error: Counter
    _forget: Callable[[], None]

    def forget(self) -> None:
        self._forget()
