"""Process tuning for serving on few cores: OS-visible thread names, thread priorities, glibc
malloc. Measured effects are in benchmarks/RESULTS.md (thread ranking, malloc tuning)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-visible name (`top -H`, /proc/PID/task/*/comm; threads it
    starts, such as ONNX Runtime's workers, inherit it). Linux only; 15 bytes at most."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread `nice` steps less important (Linux nice is per thread), so the
    event loop (HTTP, 429s, health probes) always outranks inference and decoding."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):  # not permitted here: keep the inherited priority
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def worker_thread_setup(name: str, nice: int) -> None:
    """Pool initializer for the model and decode threads: name, then lower priority."""
    name_os_thread(name)
    lower_thread_priority(nice)


def tune_malloc(enabled: bool) -> bool:
    """glibc: serve per-request buffers (bodies, decoded images, batches) from the heap. By
    default glibc mmap()s every allocation above ~128 KB-32 MB afresh and unmaps it on free, so
    each image pays its page faults again."""
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
