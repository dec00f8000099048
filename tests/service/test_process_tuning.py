"""Process tuning (Linux): thread priorities (event loop, then model, then decoding), OS thread
names, glibc malloc thresholds."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.settings import Settings
from service.tuning import lower_thread_priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux-only")


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_pool_threads_are_niced_and_the_caller_is_not() -> None:
    before = _thread_nice()
    with ThreadPoolExecutor(2, initializer=lower_thread_priority, initargs=(5,)) as pool:
        niced = {pool.submit(_thread_nice).result() for _ in range(4)}
    assert niced == {min(19, before + 5)}
    assert _thread_nice() == before


def test_zero_leaves_priority_alone() -> None:
    before = _thread_nice()
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(0,)) as pool:
        assert pool.submit(_thread_nice).result() == before


def test_model_threads_rank_between_the_event_loop_and_decoding(demo_artifact_dir: Path) -> None:
    """ONNX Runtime's own worker threads inherit the priority `load_tagger` creates the session
    at; the batcher's model thread gets the same. The caller (the event loop) stays put."""
    from service.inference.batcher import DynamicBatcher
    from service.inference.served_model import load_tagger

    def tids() -> set[int]:
        return {int(t.name) for t in Path("/proc/self/task").iterdir()}

    def alive(tids: set[int]) -> dict[int, tuple[int, str]]:
        """tid -> (nice, name) of those still running: the pool thread that created the
        session has been joined, but its kernel task can take a moment to go."""
        found = {}
        for tid in tids:
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            found[tid] = (int(stat.rsplit(")", 1)[1].split()[16]), name)
        return found

    base = _thread_nice()
    # no batch-size timing or second session: only the session's own threads are new
    settings = Settings(
        artifact_dir=demo_artifact_dir, model_nice=4, intra_op_threads=2, batch_tuning=False,
        model_workers=1,
    )  # fmt: skip
    before = tids()
    tagger, _ = load_tagger(settings)
    ort_workers = alive(tids() - before)
    assert ort_workers, "expected ONNX Runtime to start an intra-op worker thread"
    assert {nice for nice, _ in ort_workers.values()} == {min(19, base + 4)}
    names = {name for _, name in ort_workers.values()}
    assert names == {"mltag-model"}  # inherited: `top -H` and load.py attribute their CPU
    assert _thread_nice() == base

    batcher = DynamicBatcher(tagger.run, 1, 0, thread_initializer=lambda: lower_thread_priority(4))
    assert batcher._executor.submit(_thread_nice).result() == min(19, base + 4)
    batcher._executor.shutdown()


def test_worker_threads_get_os_visible_names() -> None:
    from service.tuning import worker_thread_setup

    def comm() -> str:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    before = comm()
    with ThreadPoolExecutor(1, initializer=worker_thread_setup, initargs=("mltag-decode", 0)) as p:
        assert p.submit(comm).result() == "mltag-decode"
    assert comm() == before


def test_malloc_tuning_applies_on_glibc() -> None:
    from service.tuning import tune_malloc

    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    assert tune_malloc(False) is False  # the setting turns it off
    assert tune_malloc(True) is True  # mallopt accepted both thresholds
