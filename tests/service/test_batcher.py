"""DynamicBatcher and Admission: flush on size and on delay, order, error fan-out,
backpressure, deadlines and cancellation, the idle fast path. A real function stands in for
the model here: the batcher's contract is about queueing, and the real ONNX path is covered by
the API tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mltag_artifact.preprocess import DecodeBudget
from service.inference.admission import Admission, AdmissionClosedError, QueueFullError
from service.inference.batcher import BatcherClosedError, DeadlineExceededError, DynamicBatcher
from service.inference.served_model import ServedModel, load_tagger
from service.metrics import ServiceMetrics
from service.settings import Settings


class RecordingModel:
    """Returns each sample's value times 10; records batch sizes; optional gate/delay."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait(5)
        self.batches.append([float(v) for v in batch[:, 0]])
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return batch * 10


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


def sample(v: float) -> np.ndarray:
    return np.array([v], dtype=np.float32)


M = {"model": "m", "version": "1"}  # the labels of `for_model("m", "1", ...)`


def far() -> float:
    return time.monotonic() + 30


def admission_for(b: DynamicBatcher, max_queue_size: int) -> Admission:
    """Admission in front of `b`, as ServedModel wires them."""
    return Admission(
        max_queue_size,
        b.max_batch_size,
        queued=lambda: b.queue_depth,
        batch_seconds=lambda: b.batch_seconds,
    )


def submit(
    b: DynamicBatcher, a: Admission, samples: list[np.ndarray], deadline: float
) -> list[asyncio.Future[np.ndarray]]:
    """Admit and queue a request's samples, all or none, as the API does."""
    reservation = a.reserve(len(samples))
    a.hand_over(reservation, len(samples))
    return b.submit(samples, deadline)


def test_results_map_back_in_order_and_batch_on_size() -> None:
    model = RecordingModel()
    model.gate.clear()  # hold the first batch so the rest pile up

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=4, max_delay_s=0)
        b.start()
        first = b.submit([sample(0)], far())
        await asyncio.sleep(0.05)  # batch [0] is now running (blocked on the gate)
        rest = [b.submit([sample(v)], far())[0] for v in range(1, 10)]
        model.gate.set()
        out = await asyncio.gather(*first, *rest)
        assert [float(o[0]) for o in out] == [v * 10 for v in range(10)]
        await b.stop()

    run(main)
    assert model.batches[0] == [0]
    assert [len(x) for x in model.batches[1:]] == [4, 4, 1]  # flushed on size
    assert sum(model.batches, []) == list(range(10))


def test_flush_on_delay_collects_stragglers() -> None:
    model = RecordingModel()

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=8, max_delay_s=0.2)
        b.start()
        futs = b.submit([sample(1)], far())
        await asyncio.sleep(0.05)
        futs += b.submit([sample(2), sample(3)], far())
        t0 = time.monotonic()
        await asyncio.gather(*futs)
        waited = time.monotonic() - t0
        assert 0.05 < waited < 1.0
        await b.stop()

    run(main)
    assert model.batches == [[1, 2, 3]]  # one batch: waited for the delay, not for size


def test_zero_delay_runs_alone_when_idle() -> None:
    model = RecordingModel()

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=8, max_delay_s=0)
        b.start()
        t0 = time.monotonic()
        await asyncio.gather(*b.submit([sample(1)], far()))
        assert time.monotonic() - t0 < 0.5
        await b.stop()

    run(main)
    assert model.batches == [[1]]


def test_model_error_fans_out_to_every_waiter() -> None:
    model = RecordingModel(fail=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=4, max_delay_s=0.05)
        b.start()
        futs = b.submit([sample(1), sample(2), sample(3)], far())
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        # the batcher survives a failed batch
        model.fail = False
        ok = await asyncio.gather(*b.submit([sample(4)], far()))
        assert float(ok[0][0]) == 40
        await b.stop()

    run(main)


def test_queue_full_rejects_whole_request() -> None:
    model = RecordingModel()
    model.gate.clear()

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_delay_s=0)
        a = admission_for(b, 3)
        b.start()
        running = submit(b, a, [sample(0)], far())
        await asyncio.sleep(0.05)  # running, so it no longer counts as queued
        queued = submit(b, a, [sample(1), sample(2)], far())
        with pytest.raises(QueueFullError) as err:
            submit(b, a, [sample(3), sample(4)], far())  # 2 + 2 > 3: all or nothing
        assert err.value.retry_after_s >= 1
        assert b.queue_depth == 2
        queued += submit(b, a, [sample(5)], far())  # exactly fills the queue
        model.gate.set()
        await asyncio.gather(*running, *queued)
        await b.stop()

    run(main)
    assert sorted(sum(model.batches, [])) == [0, 1, 2, 5]


def test_expired_deadline_is_not_computed() -> None:
    model = RecordingModel(delay_s=0.2)
    metrics = ServiceMetrics()
    labelled = metrics.for_model("m", "1", "cpu")

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_delay_s=0, metrics=labelled)
        b.start()
        slow = b.submit([sample(1)], far())
        await asyncio.sleep(0.02)
        doomed = b.submit([sample(2)], time.monotonic() + 0.05)  # expires while batch 1 runs
        await asyncio.gather(*slow)
        with pytest.raises(DeadlineExceededError):
            await doomed[0]
        await b.stop()

    run(main)
    assert model.batches == [[1]]


def test_cancelled_requests_are_skipped() -> None:
    model = RecordingModel()
    model.gate.clear()

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=8, max_delay_s=0)
        b.start()
        first = b.submit([sample(0)], far())
        await asyncio.sleep(0.05)
        gone = b.submit([sample(1), sample(2)], far())
        kept = b.submit([sample(3)], far())
        for f in gone:
            f.cancel()  # what the API does when the client disconnects
        model.gate.set()
        await asyncio.gather(*first, *kept)
        await b.stop()

    run(main)
    assert model.batches == [[0], [3]]


def test_stop_drains_queue_then_refuses() -> None:
    model = RecordingModel(delay_s=0.05)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=2, max_delay_s=0)
        a = admission_for(b, 10)
        b.start()
        futs = b.submit([sample(v) for v in range(5)], far())
        a.close()
        await b.stop()
        assert all(f.done() and not f.cancelled() for f in futs)
        with pytest.raises(BatcherClosedError):
            b.submit([sample(9)], far())
        with pytest.raises(AdmissionClosedError):
            a.reserve(1)

    run(main)
    assert sorted(sum(model.batches, [])) == [0, 1, 2, 3, 4]


def test_metrics_record_batches() -> None:
    model = RecordingModel()
    metrics = ServiceMetrics()
    labelled = metrics.for_model("m", "1", "cpu")

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=4, max_delay_s=0.1, metrics=labelled)
        b.start()
        await asyncio.gather(*b.submit([sample(v) for v in range(4)], far()))
        await b.stop()

    run(main)
    reg = metrics.registry
    assert reg.get_sample_value("mltag_batch_size_count", M) == 1
    assert reg.get_sample_value("mltag_batch_size_sum", M) == 4
    assert reg.get_sample_value("mltag_queue_wait_seconds_count", M) == 4
    assert reg.get_sample_value("mltag_inference_duration_seconds_count", M) == 1


def test_admission_reserves_room_before_decoding() -> None:
    model = RecordingModel()
    model.gate.clear()

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_delay_s=0)
        a = admission_for(b, 4)
        b.start()
        running = submit(b, a, [sample(0)], far())
        await asyncio.sleep(0.05)  # in the (held) model: no longer counts against the queue
        reservation = a.reserve(3)  # three images being decoded
        with pytest.raises(QueueFullError):
            a.reserve(2)  # 3 reserved + 2 > 4: refused before any decoding
        a.hand_over(reservation, 2)  # 1 image failed decoding
        futs = b.submit([sample(1), sample(2)], far())
        assert b.queue_depth == 2
        a.release(reservation)
        # queued images are counted once: 2 queued + 2 more fit exactly
        two = a.reserve(2)
        with pytest.raises(QueueFullError):
            a.reserve(1)
        a.release(two)
        model.gate.set()
        await asyncio.gather(*running, *futs)
        a.release(a.reserve(4))  # all room is back once the queue has run
        await b.stop()

    run(main)


def test_a_held_reservation_resizes_and_releases_once() -> None:
    async def main() -> None:
        b = DynamicBatcher(RecordingModel(), max_batch_size=4, max_delay_s=0)
        a = admission_for(b, 4)
        held = a.reserve(1)  # the middleware's slot, taken when the request arrived
        other = a.reserve(2)
        with pytest.raises(QueueFullError):
            a.resize(held, 3)  # 1 + 2 more would need 5
        assert held.remaining == 1  # a refused resize keeps what it held
        a.resize(held, 2)
        assert not a.has_room(1)
        a.resize(held, 1)  # shrinking gives room back
        assert a.has_room(1) and not a.has_room(2)
        a.release(held)
        a.release(held)  # idempotent: the endpoint and the middleware may both release
        a.release(other)
        assert a.has_room(4) and a.idle and b.idle

    run(main)


@pytest.mark.parametrize("wait", [True, False])
def test_idle_model_waits_for_images_being_decoded(wait: bool) -> None:
    model = RecordingModel()
    decoding = [0]

    async def main() -> None:
        b = DynamicBatcher(
            model, max_batch_size=8, max_delay_s=0, wait_for_decoding=wait,
            incoming=lambda: decoding[0],
        )  # fmt: skip
        b.batch_seconds = 1.0  # one model run takes 1 s: the longest the model waits
        b.start()
        decoding[0] = 1  # another request's image is still being decoded
        futs = b.submit([sample(1)], far())
        await asyncio.sleep(0.1)
        futs += b.submit([sample(2)], far())
        decoding[0] = 0
        b.nudge()
        await asyncio.gather(*futs)
        await b.stop()

    run(main)
    assert model.batches == ([[1, 2]] if wait else [[1], [2]])


def test_wait_for_decoding_is_capped_at_one_model_run() -> None:
    model = RecordingModel()

    async def main() -> None:
        b = DynamicBatcher(
            model, max_batch_size=8, max_delay_s=0, wait_for_decoding=True, incoming=lambda: 1
        )  # a decode that never finishes in time
        b.batch_seconds = 0.1
        b.start()
        t0 = time.monotonic()
        await asyncio.gather(*b.submit([sample(1)], far()))
        waited = time.monotonic() - t0
        assert 0.05 < waited < 0.6
        await b.stop()

    run(main)
    assert model.batches == [[1]]


def test_a_lone_request_may_run_alone_and_only_then(demo_artifact_dir: Path) -> None:
    """ServedModel.can_run_alone: nothing else admitted, decoding, queued or running, and no
    fixed batching delay."""

    async def main() -> None:
        served = ServedModel(
            load_tagger(Settings(artifact_dir=demo_artifact_dir, warmup_runs=0))[0],
            Settings(artifact_dir=demo_artifact_dir),
            ServiceMetrics(),
            ThreadPoolExecutor(1),
            DecodeBudget(2**30),
        )
        served.start()
        mine = served.admission.reserve(1)
        assert served.can_run_alone(mine)
        other = served.admission.reserve(1)  # another request is uploading or decoding
        assert not served.can_run_alone(mine)
        served.admission.release(other)
        with served.decoder.tracking(1):
            assert not served.can_run_alone(mine)
        assert served.can_run_alone(mine)
        delayed = ServedModel(
            served.tagger,
            Settings(artifact_dir=demo_artifact_dir, max_delay_ms=10),
            ServiceMetrics(),
            ThreadPoolExecutor(1),
            DecodeBudget(2**30),
        )
        assert not delayed.can_run_alone(
            delayed.admission.reserve(1)
        )  # a set delay asks for company
        served.admission.release(mine)
        await served.stop()
        await delayed.stop()

    run(main)


def test_run_alone_decodes_and_runs_in_one_trip_and_later_arrivals_batch_after() -> None:
    model = RecordingModel()
    model.gate.clear()
    metrics = ServiceMetrics()
    labelled = metrics.for_model("m", "1", "cpu")
    threads: list[str] = []

    def prepare() -> np.ndarray:
        threads.append(threading.current_thread().name)
        return sample(7)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=4, max_delay_s=0, metrics=labelled)
        a = admission_for(b, 4)
        b.start()
        mine = a.reserve(1)
        assert b.free
        a.hand_over(mine, 1)  # like an image taken into a batch, it holds no queue room
        alone = asyncio.ensure_future(b.run_alone(prepare))
        await asyncio.sleep(0.05)  # in the (held) model
        assert b.running and mine.remaining == 0 and not b.free
        assert a.has_room(4)
        later = submit(b, a, [sample(1), sample(2)], far())
        await asyncio.sleep(0.05)
        assert b.queue_depth == 2  # they wait for the model thread, not behind it
        model.gate.set()
        got, probs = await alone
        assert float(got[0]) == 7 and probs is not None and float(probs[0]) == 70
        assert [float(o[0]) for o in await asyncio.gather(*later)] == [10, 20]
        for _ in range(200):  # results arrive before the model thread's task has ended
            if not b.running:
                break
            await asyncio.sleep(0.005)
        assert not b.running and b.idle and a.idle
        await b.stop()

    run(main)
    assert threads[0].startswith("mltag-model")  # decoded on the model thread
    assert model.batches == [[7], [1, 2]]
    assert metrics.registry.get_sample_value("mltag_batch_size_count", M) == 2
    assert metrics.registry.get_sample_value("mltag_batch_size_sum", M) == 3


def test_run_alone_passes_on_decode_errors_and_model_failures() -> None:
    model = RecordingModel(fail=True)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=4, max_delay_s=0)
        b.start()
        err = ValueError("not an image")
        assert await b.run_alone(lambda: err) == (err, None)
        assert model.batches == []  # nothing to run
        with pytest.raises(RuntimeError, match="exploded"):
            await b.run_alone(lambda: sample(1))
        await asyncio.sleep(0.01)
        assert not b.running  # the model thread is free again
        model.fail = False
        assert [float(o[0]) for o in await asyncio.gather(*b.submit([sample(2)], far()))] == [20]
        await b.stop()

    run(main)


def test_uploads_hold_at_most_half_the_queue() -> None:
    a = Admission(8, 4, queued=lambda: 0, batch_seconds=lambda: 0.1)
    held = [a.reserve_upload() for _ in range(6)]
    assert [h is not None for h in held] == [True] * 4 + [False] * 2  # half of 8
    assert a.uploading == 4 and a.reserved == 4
    first = held[0]
    assert first is not None
    a.uploaded(first)  # its body arrived: no longer an upload's slot
    a.resize(first, 3)
    assert a.uploading == 3 and a.reserved == 6
    extra = a.reserve_upload()
    assert extra is not None  # an upload slot came free
    assert a.reserve_upload() is None  # room in the queue, but uploads hold their half
    last = a.reserve(1)  # a complete request takes the last slot
    with pytest.raises(QueueFullError):
        a.reserve_upload()  # the queue is full
    for h in [*held, extra, last]:
        if h is not None:
            a.release(h)
    assert a.uploading == 0 and a.reserved == 0


def test_workers_run_batches_side_by_side() -> None:
    """With two workers a second batch starts while the first is still running; with one it
    waits. Results still map back to their own futures."""

    def peak_concurrency(workers: int) -> tuple[int, list[float]]:
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}

        def model(batch: np.ndarray) -> np.ndarray:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.05)
            with lock:
                state["now"] -= 1
            return batch * 10

        async def main() -> list[float]:
            b = DynamicBatcher(model, max_batch_size=1, max_delay_s=0, workers=workers)
            b.start()
            futs = b.submit([sample(v) for v in range(4)], far())
            out = await asyncio.gather(*futs)
            await b.stop()
            return [float(o[0]) for o in out]

        out = asyncio.run(main())
        return state["peak"], out

    peak, out = peak_concurrency(2)
    assert peak == 2 and out == [0, 10, 20, 30]
    peak, out = peak_concurrency(1)
    assert peak == 1 and out == [0, 10, 20, 30]


def test_stop_waits_for_every_running_batch() -> None:
    model = RecordingModel(delay_s=0.1)

    async def main() -> None:
        b = DynamicBatcher(model, max_batch_size=1, max_delay_s=0, workers=3)
        b.start()
        futs = b.submit([sample(v) for v in range(3)], far())
        await asyncio.sleep(0.02)  # all three running
        await b.stop()
        assert all(f.done() and not f.exception() for f in futs)

    run(main)
    assert sorted(sum(model.batches, [])) == [0, 1, 2]
