"""Decode threads run at a lower CPU priority than the model's threads (Linux)."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.app import lower_thread_priority

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
