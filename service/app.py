"""`create_app(settings)`: the FastAPI app. The lifespan loads, checks and warms the model
and starts the batcher; nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from PIL import Image

from mltag_artifact import load_artifact

from . import __version__
from .api import info, kserve, tag
from .api.errors import install_error_handlers
from .inference.batcher import DynamicBatcher
from .inference.model import ModelRunner, available_cores
from .middleware import ServiceMiddleware
from .settings import Settings
from .state import ServiceState

log = logging.getLogger("mltag.app")


def decode_thread_count(settings: Settings) -> int:
    return settings.decode_threads or available_cores()


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-visible name (`top -H`, /proc/PID/task/*/comm; threads it
    starts, such as ONNX Runtime's workers, inherit it). Linux only; 15 bytes at most."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def worker_thread_setup(name: str, nice: int) -> None:
    """Pool initializer for the model and decode threads: name, then lower priority."""
    name_os_thread(name)
    lower_thread_priority(nice)


def lower_thread_priority(nice: int) -> None:
    """Pool initializer: make the calling thread `nice` steps less important (Linux nice is
    per thread). ONNX Runtime splits each op evenly over its threads, so a core taken by a
    decode thread stalls the whole op; at lower priority decoding fills the model's idle time
    instead (benchmarks/RESULTS.md, thread split)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):  # not permitted here: keep the inherited priority
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def tune_malloc(enabled: bool) -> bool:
    """glibc: serve per-request buffers (bodies, decoded images, batches) from the heap. By
    default glibc mmap()s every allocation above ~128 KB-32 MB afresh and unmaps it on free, so
    each image pays page faults again (0.6-0.8 ms per image in the shared perf notes)."""
    if not enabled or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's maximum on 64-bit
    ok &= mallopt(m_trim_threshold, 128 * 2**20)  # keep up to 128 MB free for reuse
    return bool(ok)


def load_model(state: ServiceState) -> None:
    """Validate the artifact, create the session, warm it up (blocking; run in a thread)."""
    s = state.settings
    tune_malloc(s.malloc_tuning)
    # Pillow's own decompression-bomb guard follows our limit (it errors at twice this).
    Image.MAX_IMAGE_PIXELS = s.max_image_pixels
    artifact = load_artifact(s.artifact_dir)
    # ONNX Runtime's worker threads inherit the priority of the thread creating the session.
    with ThreadPoolExecutor(
        1, initializer=worker_thread_setup, initargs=("mltag-model", s.model_nice)
    ) as t:
        runner = t.submit(
            ModelRunner, artifact, s.provider, s.require_gpu, s.intra_op_threads
        ).result()
    runner.warm_up(s.warmup_runs, s.max_batch_size)
    m = artifact.manifest
    state.artifact, state.runner = artifact, runner
    state.calibrated = np.asarray(m.thresholds, dtype=np.float32)
    state.label_index = {label: i for i, label in enumerate(m.labels)}
    state.metrics.model_info.info(
        {"name": m.name, "version": m.version, "provider": runner.provider}
    )
    log.info(
        "loaded %s %s (%d labels) from %s on %s",
        m.name,
        m.version,
        len(m.labels),
        s.artifact_dir,
        runner.provider,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.mltag
    s = state.settings
    if state.runner is None:  # mltag-serve loads before binding the port, for clean errors
        await asyncio.to_thread(load_model, state)
    assert state.runner is not None
    state.decode_pool = ThreadPoolExecutor(
        max_workers=decode_thread_count(s),
        thread_name_prefix="mltag-decode",
        initializer=worker_thread_setup,
        initargs=("mltag-decode", s.decode_nice),
    )
    state.batcher = DynamicBatcher(
        state.runner.run,
        max_batch_size=s.max_batch_size,
        max_delay_s=s.max_delay_ms / 1000.0,
        max_queue_size=s.max_queue_size,
        metrics=state.metrics,
        thread_initializer=functools.partial(worker_thread_setup, "mltag-model", s.model_nice),
        wait_for_decoding=s.wait_for_decoding,
    )
    state.batcher.start()
    state.batcher.on_crash(lambda: state.set_ready(False))  # never "ready" with a dead queue
    # Everything alive now (libraries, app, model) lives until exit: freeze it out of the
    # cyclic GC, whose full passes over it paused the event loop ~20-25 ms each under load.
    gc.collect()
    gc.freeze()
    state.set_ready(True)
    try:
        yield
    finally:
        state.begin_drain()
        state.set_ready(False)
        await state.batcher.stop()  # finishes whatever is still queued
        state.decode_pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")


def create_app(settings: Settings | None = None, state: ServiceState | None = None) -> FastAPI:
    """The app; pass `state` only to hand over a model that `load_model` already loaded."""
    settings = settings or (state.settings if state else Settings())
    state = state or ServiceState(settings=settings)
    app = FastAPI(
        title="mltag",
        version=__version__,
        description="Multilabel image tagging. POST images to /tag; see /labels for the label "
        "set and calibrated thresholds; KServe v2 protocol under /v2.",
        lifespan=lifespan,
    )
    app.state.mltag = state
    install_error_handlers(app)
    app.include_router(tag.router)
    app.include_router(info.router)
    app.include_router(kserve.router)
    app.add_middleware(ServiceMiddleware, state=state)
    if settings.cors_origins:  # outermost, so refusals (401, 413, 503) carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
