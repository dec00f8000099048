"""`create_app(settings)`: the FastAPI app. The lifespan loads, checks and warms the models and
starts their batchers (and the repository's polling); nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mltag_artifact.preprocess import DecodeBudget
from mltag_artifact.runner import available_cores

from . import __version__
from .api import info, kserve, repository, tag
from .api.errors import install_error_handlers
from .api.middleware import ServiceMiddleware
from .api.ui import ui_router
from .inference.registry import Loaded, ModelRegistry, load_initial
from .settings import Settings
from .state import ServiceState
from .tuning import tune_malloc, worker_thread_setup

log = logging.getLogger("mltag.app")


def decode_thread_count(settings: Settings) -> int:
    return settings.decode_threads or available_cores()


@asynccontextmanager
async def serving(state: ServiceState, preloaded: list[Loaded] | None) -> AsyncIterator[None]:
    """The app's lifespan: load (unless loaded already), start the served models, ready; on
    exit drain, stop and release."""
    settings = state.settings
    tune_malloc(settings.malloc_tuning)
    loaded = preloaded if preloaded else await asyncio.to_thread(load_initial, settings)
    decode_pool = ThreadPoolExecutor(
        max_workers=decode_thread_count(settings),
        thread_name_prefix="mltag-decode",
        initializer=worker_thread_setup,
        initargs=("mltag-decode", settings.decode_nice),
    )
    budget = DecodeBudget(settings.decode_memory_mb * 2**20)  # one for the whole process
    registry = ModelRegistry(settings, state.metrics, decode_pool, budget,
                             on_crash=lambda: state.set_ready(False))  # fmt: skip
    registry.start(loaded)
    state.registry = registry
    poll = None
    if settings.model_repository is not None and settings.repository_poll_s > 0:
        poll = asyncio.get_running_loop().create_task(
            registry.poll_forever(settings.repository_poll_s), name="mltag-repository-poll"
        )
    # Everything alive now (libraries, app, model) lives until exit: freeze it out of the
    # cyclic GC, whose full passes over it pause the event loop (benchmarks/RESULTS.md,
    # "GC freeze after startup").
    gc.collect()
    gc.freeze()
    state.set_ready(True)
    try:
        yield
    finally:
        state.begin_drain()
        state.set_ready(False)
        if poll is not None:
            poll.cancel()
        await registry.stop()  # finishes whatever is still queued
        decode_pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")


def create_app(
    settings: Settings | None = None,
    preloaded: list[Loaded] | None = None,
    state: ServiceState | None = None,
) -> FastAPI:
    """The app. Pass `preloaded` to hand over what `load_initial` already loaded (mltag-serve
    loads before binding the port, for clean errors); otherwise the lifespan loads it. Pass
    `state` to look inside a running app (tests)."""
    settings = settings or (state.settings if state else Settings())
    app_state = state or ServiceState(settings=settings)
    app = FastAPI(
        title="mltag",
        version=__version__,
        description="Multilabel image tagging. POST images to /tag (explain=true: where each "
        "tag comes from); see /labels for the label set and calibrated thresholds; KServe v2 "
        "protocol under /v2; a page to try the model at /.",
        lifespan=lambda _: serving(app_state, preloaded),
    )
    app.state.mltag = app_state
    install_error_handlers(app)
    app.include_router(tag.router)
    app.include_router(info.router)
    app.include_router(kserve.router)
    app.include_router(repository.router)
    if settings.ui:
        app.include_router(ui_router())
    app.add_middleware(ServiceMiddleware, state=app_state)
    if settings.cors_origins:  # outermost, so refusals (401, 413, 503) carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
