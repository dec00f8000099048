"""Every Prometheus metric the service exports, defined in one place.

Conventions: base units (seconds), `_total` on counters, histograms (they aggregate across
replicas), labels with small fixed cardinality. One registry per app so tests can build
several apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
        self.queue_wait = Histogram(
            "mltag_queue_wait_seconds",
            "Time an image waited in the batch queue before its batch started.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "mltag_inference_duration_seconds",
            "Model run time per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_duration = Histogram(
            "mltag_decode_duration_seconds",
            "Decode + resize time per image.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mltag_batch_size",
            "Images per model run.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "mltag_queue_depth", "Images waiting in the batch queue.", registry=r
        )
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
        self.images = Counter(
            "mltag_images_processed_total",
            "Images handled, by outcome (ok = tagged, error = per-image error).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "error"):
            self.images.labels(outcome)
        self.ready = Gauge("mltag_ready", "1 when loaded, warmed and not draining.", registry=r)
        self.model_info = Info(
            "mltag_model", "The served model and the execution provider in use.", registry=r
        )
