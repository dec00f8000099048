"""One served model: the loaded artifact (the contract's `Tagger`: runner, labels, label index,
calibrated thresholds) with its admission, decoder and batcher. Built once when the service
starts; requests only read it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mltag_artifact import load_artifact
from mltag_artifact.preprocess import DecodeBudget, DecodeLimits
from mltag_artifact.runner import Explainer, ModelRunner
from mltag_artifact.tagger import Tagger

from ..metrics import ServiceMetrics
from ..settings import Settings
from ..tuning import worker_thread_setup
from .admission import Admission, Reservation
from .batch_plan import BatchPlan, model_workers, plan_batches
from .batcher import DynamicBatcher
from .decoder import Decoder

log = logging.getLogger("mltag.model")


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
        max_aspect_ratio=settings.max_aspect_ratio,
    )


def load_tagger(settings: Settings, directory: Path | None = None) -> tuple[Tagger, BatchPlan]:
    """Validate the artifact in `directory` (default: the settings' artifact_dir), create its
    session, warm it up and plan its batches (blocking; raises ArtifactError or ModelLoadError
    with a message naming the problem)."""
    directory = directory or settings.artifact_dir
    artifact = load_artifact(directory)
    # ONNX Runtime's worker threads inherit the priority of the thread creating the session.
    with ThreadPoolExecutor(
        1, initializer=worker_thread_setup, initargs=("mltag-model", settings.model_nice)
    ) as t:
        runner = t.submit(
            ModelRunner,
            artifact,
            settings.provider,
            settings.require_gpu,
            settings.intra_op_threads,
        ).result()

    def single_thread(max_batch: int) -> ModelRunner:
        one = ModelRunner(artifact, "cpu", intra_op_threads=1, explain=False)
        one.warm_up(settings.warmup_runs, max_batch)
        return one

    setup = functools.partial(worker_thread_setup, "mltag-model", settings.model_nice)
    plan = plan_batches(runner, settings, single_thread, setup)
    if plan.runner is not None:  # batches run on a session of their own: this one, lone images
        runner.warm_up(settings.warmup_runs, 1)
    m = artifact.manifest
    log.info(
        "loaded %s %s (%d labels) from %s on %s",
        m.name, m.version, len(m.labels), directory, runner.provider,
    )  # fmt: skip
    return Tagger(artifact, runner), plan


def explain_rows(explainer: Explainer, batch: np.ndarray) -> np.ndarray:
    """The explain graph's outputs as one row per image, as the batcher hands results out:
    (B, C + C*h*w), the probabilities then the raw maps (split by `split_explained`)."""
    probs, maps = explainer.run(batch)
    return np.concatenate([probs, maps.reshape(len(maps), -1)], axis=1)


def split_explained(row: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """One row of `explain_rows` -> probabilities (C,) and raw maps (C, h, w)."""
    return row[:num_labels], row[num_labels:].reshape(num_labels, -1)


class ServedModel:
    """`name` and `version` are how clients address it: the repository's folder names, or
    the manifest's name and version for a single artifact."""

    def __init__(
        self,
        tagger: Tagger,
        settings: Settings,
        metrics: ServiceMetrics,
        decode_pool: ThreadPoolExecutor,
        decode_budget: DecodeBudget,
        name: str | None = None,
        version: str | None = None,
        plan: BatchPlan | None = None,
    ) -> None:
        self.tagger = tagger
        self.settings = settings
        self.plan = plan or BatchPlan(
            model_workers(settings, tagger.runner.provider), settings.max_batch_size
        )
        self.name = name or tagger.manifest.name
        self.version = version or tagger.manifest.version
        self.metrics = metrics.for_model(self.name, self.version, tagger.runner.provider)
        batch_run = self.plan.runner.run if self.plan.runner is not None else tagger.run
        self.batcher = self._batcher(
            batch_run, settings.wait_for_decoding, self.plan.max_batch_size, self.plan.workers
        )
        self.batcher.run_one = tagger.run  # a lone image: the session with a thread per core
        # Heatmaps come from the explain graph, a session of its own with its own queue: a
        # request without `explain` never runs it (docs/method.md#where-a-tag-comes-from).
        explainer = tagger.runner.explainer
        self.explainer: Explainer | None = explainer
        self.explain_batcher = (
            self._batcher(
                functools.partial(explain_rows, explainer), False, settings.max_batch_size, 1
            )
            if explainer is not None
            else None
        )
        self.decoder = Decoder(
            decode_pool,
            tagger.manifest.preprocessing,
            decode_limits(settings),
            decode_budget,
            self.metrics,
            on_done=self.batcher.nudge,
        )
        self.admission = Admission(
            settings.max_queue_size,
            self.plan.max_batch_size,
            queued=self._queued,
            # the time per batch of the queue as a whole: `workers` batches run at once
            batch_seconds=lambda: self.batcher.batch_seconds / self.batcher.workers,
        )
        self._leases = 0  # requests that resolved to this version and have not ended
        self._unleased = asyncio.Event()
        self._unleased.set()

    def _batcher(
        self, run: Callable[[np.ndarray], np.ndarray], wait: bool, max_batch: int, workers: int
    ) -> DynamicBatcher:
        settings = self.settings
        return DynamicBatcher(
            run,
            max_batch_size=max_batch,
            workers=workers,
            max_delay_s=settings.max_delay_ms / 1000.0,
            metrics=self.metrics,
            thread_initializer=functools.partial(
                worker_thread_setup, "mltag-model", settings.model_nice
            ),
            wait_for_decoding=wait,
            incoming=self._incoming,
            total_depth=self._queued,
        )

    @property
    def batchers(self) -> list[DynamicBatcher]:
        return [b for b in (self.batcher, self.explain_batcher) if b is not None]

    def _incoming(self) -> int:
        return self.decoder.in_progress

    def _queued(self) -> int:
        return sum(b.queue_depth for b in self.batchers)

    @property
    def idle(self) -> bool:
        """Nothing admitted, queued or running, and no request holding it."""
        return self._leases == 0 and self.admission.idle and all(b.idle for b in self.batchers)

    def acquire(self) -> None:
        """A request will use this version until `release`: it is not stopped meanwhile."""
        self._leases += 1
        self._unleased.clear()

    def release(self) -> None:
        self._leases -= 1
        if self._leases == 0:
            self._unleased.set()

    def can_run_alone(self, reservation: Reservation) -> bool:
        """The request holding `reservation` is the only work in the service: its lone image
        may be decoded and run in one trip to the model thread (`batcher.run_alone`)."""
        return (
            self.batcher.free and self.decoder.in_progress == 0 and self.admission.only(reservation)
        )

    def start(self) -> None:
        for batcher in self.batchers:
            batcher.start()

    async def stop(self) -> None:
        """Admit nothing more; finish what is queued."""
        self.admission.close()
        for batcher in self.batchers:
            await batcher.stop()

    async def retire(self) -> None:
        """Replaced by another version: wait for the requests that resolved to this one (they
        finish here), then stop and drop its metrics' series."""
        await self._unleased.wait()
        await self.stop()
        self.metrics.forget()
