"""One served model: the loaded artifact (the contract's `Tagger`: runner, labels, label index,
calibrated thresholds) with its admission, decoder and batcher. Built once when the service
starts; requests only read it."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from mltag_artifact import load_artifact
from mltag_artifact.preprocess import DecodeBudget, DecodeLimits
from mltag_artifact.runner import ModelRunner
from mltag_artifact.tagger import Tagger

from ..metrics import ServiceMetrics
from ..settings import Settings
from ..tuning import worker_thread_setup
from .admission import Admission, Reservation
from .batcher import DynamicBatcher
from .decoder import Decoder

log = logging.getLogger("mltag.model")


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
        max_aspect_ratio=settings.max_aspect_ratio,
    )


def load_tagger(settings: Settings) -> Tagger:
    """Validate the artifact, create its session, warm it up (blocking; raises ArtifactError
    or ModelLoadError with a message naming the problem)."""
    # Pillow's own decompression-bomb guard follows our limit (it errors at twice this).
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    artifact = load_artifact(settings.artifact_dir)
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
    runner.warm_up(settings.warmup_runs, settings.max_batch_size)
    m = artifact.manifest
    log.info(
        "loaded %s %s (%d labels) from %s on %s",
        m.name,
        m.version,
        len(m.labels),
        settings.artifact_dir,
        runner.provider,
    )
    return Tagger(artifact, runner)


class ServedModel:
    def __init__(
        self,
        tagger: Tagger,
        settings: Settings,
        metrics: ServiceMetrics,
        decode_pool: ThreadPoolExecutor,
        decode_budget: DecodeBudget,
    ) -> None:
        self.tagger = tagger
        self.settings = settings
        self.metrics = metrics
        self.batcher = DynamicBatcher(
            tagger.run,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_delay_ms / 1000.0,
            metrics=metrics,
            thread_initializer=functools.partial(
                worker_thread_setup, "mltag-model", settings.model_nice
            ),
            wait_for_decoding=settings.wait_for_decoding,
            incoming=self._incoming,
        )
        self.decoder = Decoder(
            decode_pool,
            tagger.manifest.preprocessing,
            decode_limits(settings),
            decode_budget,
            metrics,
            on_done=self.batcher.nudge,
        )
        self.admission = Admission(
            settings.max_queue_size,
            settings.max_batch_size,
            queued=lambda: self.batcher.queue_depth,
            batch_seconds=lambda: self.batcher.batch_seconds,
        )
        metrics.model_info.info(
            {
                "name": tagger.manifest.name,
                "version": tagger.manifest.version,
                "provider": tagger.runner.provider,
            }
        )

    def _incoming(self) -> int:
        return self.decoder.in_progress

    @property
    def idle(self) -> bool:
        """Nothing admitted, queued or running."""
        return self.admission.idle and self.batcher.idle

    def can_run_alone(self, reservation: Reservation) -> bool:
        """The request holding `reservation` is the only work in the service: its lone image
        may be decoded and run in one trip to the model thread (`batcher.run_alone`)."""
        return (
            self.batcher.free and self.decoder.in_progress == 0 and self.admission.only(reservation)
        )

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        """Admit nothing more; finish what is queued."""
        self.admission.close()
        await self.batcher.stop()
