"""The models a service serves, by name: one artifact (MLTAG_ARTIFACT_DIR), or every model of a
repository (MLTAG_MODEL_REPOSITORY) reloaded by polling or on request.

A new version is validated (manifest, sha256, graph checks), loaded and warmed off the event
loop, started, and only then swapped in: requests that resolved the old version finish on it
(`ServedModel.acquire`), new ones get the new one, and the old one is stopped once its last
request ends. A version that fails is never served: the one before it stays, and the failure
is logged, counted (`mltag_model_load_failures_total`) and shown in the repository index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltag_artifact import ArtifactError
from mltag_artifact.preprocess import DecodeBudget
from mltag_artifact.runner import ModelLoadError
from mltag_artifact.tagger import Tagger

from ..metrics import ServiceMetrics
from ..settings import Settings
from .batch_plan import BatchPlan
from .repository import VersionDir, choose, scan
from .served_model import ServedModel, load_tagger

log = logging.getLogger("mltag.registry")


class ModelNotFoundError(LookupError):
    """No such model (or version) is served; the message says what is."""


class ModelLoadFailedError(RuntimeError):
    """A version could not be loaded; the previous one (if any) is still served."""


@dataclass
class Loaded:
    """A version loaded before the app starts (mltag-serve loads before binding its port)."""

    name: str
    version: str
    tagger: Tagger
    plan: BatchPlan


@dataclass
class Entry:
    name: str
    serving: ServedModel | None = None
    state: str = "UNAVAILABLE"  # READY | LOADING | UNAVAILABLE, as the repository index says
    reason: str = ""
    failed: dict[int, tuple[int, ...]] = field(default_factory=dict)  # version -> signature


def load_initial(settings: Settings) -> list[Loaded]:
    """What to serve at startup (blocking): the single artifact, or each repository model's
    chosen version. Raises ArtifactError / ModelLoadError naming the problem."""
    root = settings.model_repository
    if root is None:
        tagger, plan = load_tagger(settings)
        return [Loaded(tagger.manifest.name, tagger.manifest.version, tagger, plan)]
    if not root.is_dir():
        raise ArtifactError(f"model repository {str(root)!r} does not exist")
    loaded = []
    for name, versions in scan(root).items():
        chosen = choose(versions, settings.model_versions.get(name))
        if chosen is None:
            raise ArtifactError(
                f"{root / name}: no version folder to serve ({_wanted(settings, name)})"
            )
        loaded.append(Loaded(name, str(chosen.version), *load_tagger(settings, chosen.path)))
    if not loaded:
        raise ArtifactError(f"model repository {str(root)!r} holds no model folder")
    names = [item.name for item in loaded]
    if settings.default_model is not None and settings.default_model not in names:
        raise ArtifactError(f"default_model {settings.default_model!r} is not in {root}: {names}")
    return loaded


def _wanted(settings: Settings, name: str) -> str:
    pinned = settings.model_versions.get(name)
    return f"version {pinned} is pinned" if pinned is not None else "the highest with a manifest"


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        decode_pool: ThreadPoolExecutor,
        decode_budget: DecodeBudget,
        on_crash: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self._on_crash = on_crash  # a batcher died (a bug): never "ready" with a dead queue
        self.metrics = metrics
        self._pool = decode_pool
        self._budget = decode_budget
        self.entries: dict[str, Entry] = {}
        self.default_name = ""
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    # ---- serving -------------------------------------------------------------------------
    def start(self, initial: list[Loaded]) -> None:
        for item in initial:
            self._swap(self.entries.setdefault(item.name, Entry(item.name)), item)
        names = sorted(self.entries)
        self.default_name = self.settings.default_model or names[0]
        if self.default_name not in self.entries:
            raise ModelNotFoundError(
                f"default_model {self.default_name!r} is not among the models served: {names}"
            )
        if len(names) > 1 and not self.settings.default_model:
            log.info("no default_model set: %r is the default of %s", self.default_name, names)

    @property
    def default(self) -> ServedModel | None:
        entry = self.entries.get(self.default_name)
        return entry.serving if entry is not None else None

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The version serving `name` (the default model when None), which must be `version`
        when one is given."""
        name = name or self.default_name
        entry = self.entries.get(name)
        if entry is None or entry.serving is None:
            served = sorted(n for n, e in self.entries.items() if e.serving is not None)
            raise ModelNotFoundError(f"unknown model {name!r}; this server serves {served}")
        if version is not None and version != entry.serving.version:
            raise ModelNotFoundError(
                f"unknown version {version!r} of {name!r}; serving {entry.serving.version!r}"
            )
        return entry.serving

    def served(self) -> list[ServedModel]:
        return [e.serving for e in self.entries.values() if e.serving is not None]

    @property
    def idle(self) -> bool:
        return all(m.idle for m in self.served()) and not self._retiring

    def _swap(self, entry: Entry, item: Loaded) -> None:
        model = ServedModel(item.tagger, self.settings, self.metrics, self._pool, self._budget,
                            name=item.name, version=item.version, plan=item.plan)  # fmt: skip
        model.start()
        for batcher in model.batchers:
            batcher.on_crash(self._on_crash)
        old, entry.serving = entry.serving, model
        entry.state, entry.reason = "READY", ""
        log.info("serving %s version %s", item.name, item.version)
        if old is not None:
            self._retire(old)

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(model.retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        """Finish what every served version has queued, and the versions being retired."""
        await asyncio.gather(*(m.stop() for m in self.served()), *self._retiring)

    # ---- the repository ------------------------------------------------------------------
    async def load(self, name: str) -> ServedModel:
        """(Re)load `name` from the repository: its chosen version, unless already served."""
        root = self.settings.model_repository
        if root is None:
            raise ModelLoadFailedError("no model repository is configured (MLTAG_MODEL_REPOSITORY)")
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions = await asyncio.to_thread(lambda: scan(root).get(name, []))
            chosen = choose(versions, self.settings.model_versions.get(name))
            if chosen is None:
                raise ModelNotFoundError(
                    f"no version of {name!r} in {root} ({_wanted(self.settings, name)})"
                )
            entry = self.entries.setdefault(name, Entry(name))
            if entry.serving is not None and entry.serving.version == str(chosen.version):
                return entry.serving
            await self._load_version(entry, chosen)
            assert entry.serving is not None
            return entry.serving

    async def _load_version(self, entry: Entry, chosen: VersionDir) -> None:
        entry.state = "LOADING"
        try:
            tagger, plan = await asyncio.to_thread(load_tagger, self.settings, chosen.path)
        except (ArtifactError, ModelLoadError, OSError) as e:
            entry.failed[chosen.version] = await asyncio.to_thread(chosen.signature)
            entry.state = "READY" if entry.serving is not None else "UNAVAILABLE"
            entry.reason = f"version {chosen.version} failed to load: {e}"
            self.metrics.load_failures.labels(entry.name).inc()
            log.error("%s version %s not served: %s", entry.name, chosen.version, e)
            raise ModelLoadFailedError(entry.reason) from e
        self._swap(entry, Loaded(entry.name, str(chosen.version), tagger, plan))

    async def unload(self, name: str) -> None:
        if name == self.default_name:
            raise ModelLoadFailedError(
                f"{name!r} is the default model; set MLTAG_DEFAULT_MODEL to another to unload it"
            )
        entry = self.entries.get(name)
        if entry is None or entry.serving is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        old, entry.serving = entry.serving, None
        entry.state, entry.reason = "UNAVAILABLE", "unloaded"
        self._retire(old)
        log.info("unloaded %s", name)

    def index(self) -> list[dict[str, Any]]:
        """Every model known, as the model repository extension lists them."""
        rows = []
        for name, entry in sorted(self.entries.items()):
            row: dict[str, Any] = {"name": name, "state": entry.state}
            if entry.serving is not None:
                row["version"] = entry.serving.version
            if entry.reason:
                row["reason"] = entry.reason
            rows.append(row)
        return rows

    async def poll_forever(self, interval_s: float) -> None:
        """Every `interval_s`: load a new chosen version of each model (a version that failed
        is retried only once its folder changed), and new models."""
        root = self.settings.model_repository
        assert root is not None
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once(root)
            except Exception:  # a bug here must not stop polling for good
                log.exception("polling the model repository failed")

    async def poll_once(self, root: Path) -> None:
        repository = await asyncio.to_thread(scan, root)
        for name, versions in repository.items():
            chosen = choose(versions, self.settings.model_versions.get(name))
            if chosen is not None and await self._worth_loading(name, chosen):
                with contextlib.suppress(ModelLoadFailedError, ModelNotFoundError):
                    await self.load(name)  # a failure is logged and counted; the old one stays

    async def _worth_loading(self, name: str, chosen: VersionDir) -> bool:
        """Not served yet, and not the same folder that already failed."""
        entry = self.entries.get(name)
        if entry is None:
            return True
        if entry.serving is not None and entry.serving.version == str(chosen.version):
            return False
        failed = entry.failed.get(chosen.version)
        return failed is None or failed != await asyncio.to_thread(chosen.signature)
