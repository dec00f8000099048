"""`mltag-batch`: tag a whole collection with Ray Data, resumably.

Exit codes: 0 done (error rows included: a bad image is a row, not a failure); 2 the run could
not start (bad option, artifact, input or output directory); 1 the run failed part-way (the
shards written so far are kept: rerun the same command to resume); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from mltag_artifact import ArtifactError

from .job import JobConfig, JobError, check, execute, execute_on_cluster, prepare, ray_session
from .sinks import EXTENSIONS, OutputError
from .sources import SourceError
from .summary import Summary
from .tagging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, TagOptions

EPILOG = """\
SRC is a directory (searched recursively for image files), a glob ('photos/**/*.jpg'), one
image, or a manifest: JSONL, CSV or Parquet with a `path` (or `uri`) column and an optional
`id` column (relative paths are relative to the manifest). Paths may be local or filesystem
URIs (s3://, gs://, ...). OUT gets one file per shard (part-*.parquet or part-*.jsonl), one row
per input, `_job.json` and `_summary.json`. Rerunning the same command after an interruption
tags only the inputs that have no row yet.

Without --address, a local Ray starts on this machine's cores; with it, the same command runs
on an existing cluster (artifact files are shipped to the workers; SRC and OUT must be
reachable from every node: a shared mount or object storage).
"""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _thresholds(text: str) -> dict[str, float]:
    """Per-label overrides, as `/tag` takes them: a JSON object of label: value in [0, 1]."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"dog\": 0.3}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of label: value")
    for label, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise argparse.ArgumentTypeError(f"{label!r}: must be a number between 0 and 1")
    return {str(k): float(v) for k, v in value.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mltag-batch",
        description="Tag every image of a collection with an mltag artifact, on Ray Data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifact", required=True, type=Path, help="model artifact directory")
    p.add_argument("--input", required=True, metavar="SRC", help="directory, glob, or manifest")
    p.add_argument("--output", required=True, metavar="OUT", help="output directory (or URI)")
    p.add_argument("--format", choices=sorted(EXTENSIONS), default="parquet")
    p.add_argument(
        "--address",
        help="Ray cluster: auto (one running on this machine), HOST:PORT or ray://HOST:PORT; "
        "default: start a local Ray",
    )
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per model run")
    p.add_argument(
        "--concurrency", type=_positive_int, help="tagging actors (default: CPUs / cpus-per-actor)"
    )
    p.add_argument("--cpus-per-actor", type=_positive_float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument(
        "--provider", choices=["auto", "cpu", "cuda", "tensorrt"], default="auto",
        help="ONNX Runtime execution provider, as mltag-serve's",
    )  # fmt: skip
    p.add_argument(
        "--shard-size", type=_positive_int, default=256,
        help="inputs per output file (the unit of work and of resuming)",
    )  # fmt: skip
    p.add_argument("--all-scores", action="store_true", help="add every label's score")
    p.add_argument("--min-score", type=_fraction, help="one threshold for every label")
    p.add_argument(
        "--thresholds", type=_thresholds, metavar="JSON",
        help='per-label thresholds, e.g. \'{"dog": 0.3}\' (beats --min-score)',
    )  # fmt: skip
    p.add_argument("--top-k", type=_positive_int, help="at most K tags per image")
    p.add_argument(
        "--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
        help="larger images get an image_too_large error row (default: the service's limit)",
    )  # fmt: skip
    p.add_argument(
        "--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES,
        help="larger files get a file_too_large error row",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def config_from(args: argparse.Namespace) -> JobConfig:
    options = TagOptions(
        min_score=args.min_score,
        thresholds=args.thresholds,
        top_k=args.top_k,
        all_scores=args.all_scores,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )
    return JobConfig(
        artifact=args.artifact,
        source=args.input,
        output=args.output,
        fmt=args.format,
        options=options,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        provider=args.provider,
        shard_size=args.shard_size,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (ArtifactError, SourceError, OutputError, JobError) as e:
        # Raised on the cluster (ray://), Ray wraps it; its `cause` is the plain error.
        print(f"mltag-batch: {getattr(e, 'cause', None) or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mltag-batch: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # Ray wraps a worker's error; the shards written so far stay
        print(
            f"mltag-batch: the run failed: {e}\nrerun the same command to resume", file=sys.stderr
        )
        return 1
    print(summary.line(), flush=True)
    return 0


def run(args: argparse.Namespace) -> Summary:
    """Everything that can fail is checked before Ray starts. Over Ray Client (`ray://`) the
    cluster lists the inputs and claims the output itself: they must be reachable there."""
    config = config_from(args)
    if (args.address or "").startswith("ray://"):
        check(config)
        with ray_session(args.address) as startup_s:
            return execute_on_cluster(config, startup_s, progress=not args.quiet)
    plan = prepare(config)
    with ray_session(args.address) as startup_s:
        return execute(plan, startup_s, progress_stream=None if args.quiet else sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
