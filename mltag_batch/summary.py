"""What a run reports: a progress count while it runs (done/total, errors, img/s, ETA), the
final line, and `_summary.json` in the output directory."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO


def _duration(value: float) -> str:
    seconds = max(0, round(value))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"


@dataclass
class Progress:
    """Counts finished shards on the driver. Prints at most every `interval` seconds: in place
    on a terminal, one line at a time otherwise (logs)."""

    total: int  # inputs in the collection
    done_before: int  # of which already in the output when this run started
    stream: TextIO | None
    interval: float = 10.0
    started: float = field(default_factory=time.monotonic)
    processed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    shards: int = 0
    ready_at: dict[int, float] = field(default_factory=dict)  # actor pid -> init done (epoch s)
    profile: dict[str, float] = field(default_factory=dict)  # seconds, summed over shards
    _last_print: float = 0.0

    def update(self, shard: Mapping[str, Any]) -> None:
        self.processed += int(shard["rows"])
        self.errors.update({str(k): int(v) for k, v in (shard["error_codes"] or {}).items()})
        self.shards += 1
        self.ready_at.setdefault(int(shard["actor"]), float(shard["ready_at"]))
        for key in ("decode_s", "model_s", "write_s", "wall_s"):
            self.profile[key] = self.profile.get(key, 0.0) + float(shard[key])
        now = time.monotonic()
        if now - self._last_print >= self.interval:
            self.show(now)

    def show(self, now: float | None = None, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic() if now is None else now
        self._last_print = now
        tty = self.stream.isatty()
        end = "\n" if final or not tty else ""
        self.stream.write(("\r" if tty else "") + self.line(now) + end)
        self.stream.flush()

    def line(self, now: float) -> str:
        done = self.done_before + self.processed
        elapsed = now - self.started
        rate = self.processed / elapsed if elapsed > 0 else 0.0
        left = self.total - done
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
        pct = 100.0 * done / self.total if self.total else 100.0
        return (
            f"mltag-batch: {done}/{self.total} images ({pct:.0f}%), "
            f"{sum(self.errors.values())} errors, {rate:.1f} img/s{eta}"
        )


@dataclass
class Summary:
    """`_summary.json`: the whole output's counts, then this run's."""

    status: str  # complete, or failed (the run stopped early: rerun to resume)
    error: str | None
    input: str
    output: str
    format: str
    model: dict[str, str]
    options: dict[str, Any]
    total: int  # inputs
    tagged: int  # inputs with a row and no error
    errors: int  # inputs with an error row
    errors_by_code: dict[str, int]
    missing: int  # inputs without a row (only after a failed run)
    shards: int
    this_run: dict[str, Any]
    started_at: str
    finished_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        run = self.this_run
        if self.status != "complete":
            return (
                f"mltag-batch: {self.status} after {run['processed']} images this run; "
                f"{self.total - self.missing}/{self.total} in {self.output}"
            )
        rate = run["images_per_s"]
        return (
            f"mltag-batch: {self.total} images: {self.tagged} tagged, {self.errors} errors"
            + (f", {self.missing} missing" if self.missing else "")
            + f"; this run {run['processed']} in {run['seconds']:.1f} s ({rate:.1f} img/s, "
            f"Ray startup {run['ray_startup_s']:.1f} s); output {self.output} "
            f"({self.shards} {self.format} shards)"
        )


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
