"""One bulk-tagging run, in two steps. `prepare` (no Ray): load the artifact, list the inputs,
check and claim the output directory, and leave out the inputs it already holds. `execute`
(on a connected Ray, see `ray_session`): tag the rest with Ray Data, a pool of `ImageTagger`
actors that each write their shards, while the driver counts progress; then the summary."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mltag_artifact import Artifact, load_artifact

from . import sinks, storage
from .sources import Inputs, list_inputs
from .summary import Progress, Summary, utc_now
from .tagging import ArtifactFiles, ImageTagger, TagOptions, WorkerOptions

# Set before Ray starts a local cluster: loopback addresses only, and no usage report.
RAY_ENV_DEFAULTS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class JobError(Exception):
    """The run cannot start as asked (the message says why)."""


@dataclass(frozen=True)
class JobConfig:
    artifact: Path
    source: str
    output: str
    fmt: str = "parquet"
    options: TagOptions = field(default_factory=TagOptions)
    batch_size: int = 16
    concurrency: int | None = None  # actors; None = as many as the cluster's CPUs allow
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    provider: str = "auto"
    shard_size: int = 256


@dataclass
class Plan:
    """A prepared run: what is left to tag, and who owns the output."""

    config: JobConfig
    artifact: Artifact
    inputs: Inputs
    pending: list[int]  # indices into inputs still without a row
    prior: Counter[str | None]  # error codes of the rows already there (None = tagged)
    run_id: str
    started_at: str


def prepare(config: JobConfig) -> Plan:
    """Everything that can fail before Ray starts; raises JobError (or the contract's
    ArtifactError, sources' SourceError, sinks' OutputError), all with plain messages."""
    started_at = utc_now()
    artifact = load_artifact(config.artifact)
    _check_labels(artifact, config.options)
    inputs = list_inputs(config.source)
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    sinks.claim(config.output, job_spec(config, artifact), run_id)
    sinks.remove_temp_files(config.output)
    done = sinks.read_done(config.output, config.fmt)
    pending = [i for i, id_ in enumerate(inputs.ids) if id_ not in done]
    prior = Counter(done[id_] for id_ in inputs.ids if id_ in done)
    return Plan(config, artifact, inputs, pending, prior, run_id, started_at)


def check(config: JobConfig) -> None:
    """What can be checked where the command runs: the artifact and the options."""
    _check_labels(load_artifact(config.artifact), config.options)


def _check_labels(artifact: Artifact, options: TagOptions) -> None:
    known = set(artifact.manifest.labels)
    unknown = [label for label in options.thresholds or {} if label not in known]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise JobError(
            f"unknown label(s) in --thresholds: {shown}; the model's labels are listed in "
            f"{artifact.directory / 'manifest.json'}"
        )


def job_spec(config: JobConfig, artifact: Artifact) -> dict[str, Any]:
    """What every row of an output depends on; a rerun must match it to resume."""
    m = artifact.manifest
    manifest_bytes = (artifact.directory / "manifest.json").read_bytes()
    source = config.source if storage.is_uri(config.source) else os.path.abspath(config.source)
    return {
        "input": source,
        "format": config.fmt,
        "model": {
            "name": m.name,
            "version": m.version,
            "sha256": m.onnx.sha256,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        },
        "options": config.options.as_dict(),
    }


@contextmanager
def ray_session(address: str | None) -> Iterator[float]:
    """Connect to Ray for the duration; yields the seconds it took. No address: start a local
    Ray on this machine's cores (and stop it after). A Ray this process already runs is used
    as it is."""
    if address is None:
        for key, value in RAY_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.monotonic()
    if address is None:
        from mltag_artifact.runner import available_cores

        # "local": a new Ray of our own, even where another was started with `ray start`.
        ray.init(
            address="local",
            num_cpus=available_cores(),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield time.monotonic() - t0
    finally:
        ray.shutdown()


def execute(
    plan: Plan,
    ray_startup_s: float = 0.0,
    progress_stream: TextIO | None = None,
    progress_interval: float = 10.0,
) -> Summary:
    """Tag `plan.pending` on the connected Ray; write `_summary.json`; return the summary."""
    config = plan.config
    progress = Progress(
        total=len(plan.inputs),
        done_before=len(plan.inputs) - len(plan.pending),
        stream=progress_stream,
        interval=progress_interval,
    )
    concurrency = 0
    t0, submitted = time.monotonic(), time.time()
    error: BaseException | None = None
    try:
        if plan.pending:
            concurrency = _actors(config, len(plan.pending))
            if progress_stream is not None:
                progress_stream.write(
                    f"mltag-batch: {len(plan.pending)} to tag ({progress.done_before} already "
                    f"in {config.output}) on {concurrency} actor(s) x "
                    f"{config.cpus_per_actor:g} CPU\n"
                )
            for shard in _dataset(plan, concurrency).iter_rows():
                progress.update(shard)
    except BaseException as e:  # the summary says how far it got, then the error goes on
        error = e
        raise
    finally:
        seconds = time.monotonic() - t0
        progress.show(final=True)
        summary = _summarize(plan, progress, seconds, submitted, ray_startup_s, concurrency)
        if error is not None:
            summary.status = "failed"
            summary.error = f"{type(error).__name__}: {error}"[:4000]  # Ray's carry tracebacks
        sinks.write_json(storage.join(config.output, sinks.SUMMARY_FILE), summary.to_dict())
    return summary


def execute_on_cluster(
    config: JobConfig, ray_startup_s: float = 0.0, progress: bool = True
) -> Summary:
    """The whole run (prepare + execute) as one task on the cluster, for Ray Client
    (`ray://`) connections: Ray Data does not support Ray Client drivers (its executor needs a
    process attached to a raylet). The artifact goes along as bytes; the task's progress lines
    come back through Ray's log forwarding; its errors are raised here as their own types."""
    import ray

    files = ArtifactFiles.read(load_artifact(config.artifact))
    task = ray.remote(num_cpus=0)(_run_here)
    summary: Summary = ray.get(task.remote(config, ray.put(files), ray_startup_s, progress))
    return summary


def _run_here(
    config: JobConfig, files: ArtifactFiles, ray_startup_s: float, progress: bool
) -> Summary:
    with tempfile.TemporaryDirectory(prefix="mltag-artifact-") as tmp:
        files.unpack(Path(tmp))
        plan = prepare(dataclasses.replace(config, artifact=Path(tmp)))
        return execute(plan, ray_startup_s, sys.stderr if progress else None)


def _actors(config: JobConfig, pending: int) -> int:
    import ray

    shards = math.ceil(pending / config.shard_size)
    if config.concurrency:
        return min(config.concurrency, shards)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(shards, int(cpus // config.cpus_per_actor)))


def _dataset(plan: Plan, concurrency: int) -> Any:
    """The pending inputs, one block per shard, through the actor pool."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # It warns that the progress bars we turn off are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver prints its own done/total count
    ctx.print_on_execution_start = False
    config, inputs = plan.config, plan.inputs
    items = [{"seq": i, "id": inputs.ids[i], "path": inputs.paths[i]} for i in plan.pending]
    blocks = math.ceil(len(items) / config.shard_size)
    worker = WorkerOptions(
        batch_size=config.batch_size,
        threads=max(1, round(config.cpus_per_actor)),
        provider=config.provider,
    )
    writer = sinks.ShardWriter(
        config.output,
        config.fmt,
        plan.run_id,
        config.options.all_scores,
        parents=plan.artifact.manifest.label_info is not None,
    )
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    return ds.map_batches(
        ImageTagger,
        batch_size=None,  # a whole block (one shard) per call
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor or None,
        fn_constructor_kwargs={
            # By reference: the actors fetch it from the object store, which holds it while the
            # driver does, so Ray can restart a lost actor.
            "artifact": ray.put(ArtifactFiles.read(plan.artifact)),
            "options": config.options,
            "worker": worker,
            "writer": writer,
        },
    )


def _summarize(
    plan: Plan,
    progress: Progress,
    seconds: float,
    submitted: float,
    ray_startup_s: float,
    concurrency: int,
) -> Summary:
    """The whole output's counts (rows from earlier runs + this run's), then this run's."""
    config = plan.config
    codes = Counter({k: v for k, v in plan.prior.items() if k is not None}) + progress.errors
    n_errors = sum(codes.values())
    tagged = plan.prior[None] + progress.processed - sum(progress.errors.values())
    m = plan.artifact.manifest
    options = {
        **config.options.as_dict(),
        "batch_size": config.batch_size,
        "concurrency": concurrency,
        "cpus_per_actor": config.cpus_per_actor,
        "gpus_per_actor": config.gpus_per_actor,
        "provider": config.provider,
        "shard_size": config.shard_size,
    }
    return Summary(
        status="complete",
        error=None,
        input=config.source,
        output=config.output,
        format=config.fmt,
        model={"name": m.name, "version": m.version, "sha256": m.onnx.sha256},
        options=options,
        total=len(plan.inputs),
        tagged=tagged,
        errors=n_errors,
        errors_by_code=dict(sorted(codes.items())),
        missing=len(plan.inputs) - tagged - n_errors,
        shards=len(sinks.shard_files(config.output, config.fmt)),
        this_run=_this_run(plan, progress, seconds, submitted, ray_startup_s, concurrency),
        started_at=plan.started_at,
        finished_at=utc_now(),
    )


def _this_run(
    plan: Plan,
    progress: Progress,
    seconds: float,
    submitted: float,
    ray_startup_s: float,
    concurrency: int,
) -> dict[str, Any]:
    # Throughput after startup: from the first actor ready (the model loaded) to the end, a
    # conservative window (it counts the time other actors were still starting).
    ready = sorted(progress.ready_at.values()) or [submitted]
    end = time.time()
    steady = progress.processed / (end - ready[0]) if end > ready[0] else 0.0
    errors = sum(progress.errors.values())
    return {
        "run_id": plan.run_id,
        "processed": progress.processed,
        "tagged": progress.processed - errors,
        "errors": errors,
        "seconds": round(seconds, 3),
        "images_per_s": round(progress.processed / seconds, 2) if seconds > 0 else 0.0,
        "images_per_s_after_startup": round(steady, 2),
        "ray_startup_s": round(ray_startup_s, 3),
        "first_actor_ready_s": round(ready[0] - submitted, 3),
        "all_actors_ready_s": round(ready[-1] - submitted, 3),
        # Wall clock (epoch s) from the first actor ready to the last shard: lets tools
        # measure what the run cost after startup (benchmarks/batch.py).
        "after_startup_window": [round(ready[0], 3), round(end, 3)],
        "actors": concurrency,
        "shards": progress.shards,
        "profile_s": {k: round(v, 3) for k, v in progress.profile.items()},
    }
