"""The ideal pipeline's model side, shared by the benchmarks that compare against it: one
thread running ONNX Runtime on full batches only, fed decoded samples through a queue."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np


def run_full_batches(runner: Any, ready: queue.Queue[Any], batch: int) -> None:
    """Run `runner` on every `batch` samples from `ready` (and on the rest at the end); a None
    in the queue ends it. The model always runs at the best batch size, as the issue defines
    the ideal."""
    pending: list[Any] = []
    while True:
        item = ready.get()
        if item is not None:
            pending.append(item)
        if pending and (item is None or len(pending) == batch):
            runner.run(np.stack(pending))
            pending = []
        if item is None:
            return
