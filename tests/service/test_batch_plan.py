"""The batching plan: which batch size the service caps batches at, from measured cost, and
how many run at once. A real function with a known cost per batch size stands in for the
model in the unit tests; the last test plans the real demo model through ONNX Runtime."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mltag_artifact import load_artifact
from mltag_artifact.runner import ModelRunner, available_cores
from service.inference import batch_plan
from service.inference.batch_plan import candidate_sizes, measure, pick
from service.inference.served_model import load_tagger
from service.settings import Settings


def test_candidate_sizes_are_powers_of_two_and_the_limit() -> None:
    assert candidate_sizes(1) == [1]
    assert candidate_sizes(16) == [1, 2, 4, 8, 16]
    assert candidate_sizes(12) == [1, 2, 4, 8, 12]


def test_pick_takes_the_fastest_or_a_larger_size_close_to_it() -> None:
    assert pick({1: 5.0, 2: 4.0, 4: 4.9, 8: 6.0}) == 2
    assert pick({1: 5.0, 2: 4.0, 4: 4.3, 8: 6.0}) == 4  # within 10%: fewer hand-offs
    assert pick({1: 1.0}) == 1


def test_measure_finds_the_cheapest_size_and_stops_when_it_gets_worse() -> None:
    ms_per_image = {1: 3.0, 2: 2.0, 4: 1.0, 8: 2.0, 16: 4.0}  # cheapest at 4, then worse
    seen: list[int] = []

    def model(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        time.sleep(ms_per_image[len(batch)] * len(batch) / 1000)
        return batch

    costs = measure(model, np.zeros(3, np.uint8), [1, 2, 4, 8, 16], workers=2)
    assert min(costs, key=lambda b: costs[b]) == 4
    assert 16 not in costs and 16 not in seen  # 8 was 2x the best: larger sizes not tried
    assert costs[4] == pytest.approx(0.5, rel=0.6)  # two at once: about half the wall time


def test_the_demo_model_is_planned_on_a_single_thread_session(demo_artifact_dir: Path) -> None:
    tagger, plan = load_tagger(Settings(artifact_dir=demo_artifact_dir, max_batch_size=8))
    assert plan.workers == available_cores()
    assert plan.max_batch_size in plan.ms_per_image and set(plan.ms_per_image) <= {1, 2, 4, 8}
    if plan.workers > 1:  # several batches at once: each on its own one-thread session
        assert plan.runner is not None and plan.runner.session_threads == 1
        x = np.zeros((2, *tagger.runner.sample_shape), tagger.runner.dtype)
        np.testing.assert_allclose(plan.runner.run(x), tagger.run(x), atol=1e-5)
    _, plain = load_tagger(Settings(artifact_dir=demo_artifact_dir, batch_tuning=False))
    assert plain.ms_per_image == {} and plain.max_batch_size == 16


@pytest.mark.parametrize(
    ("costs", "fresh"),
    [({1: 2.0, 2: 1.0, 4: 2.0}, True), ({1: 2.0, 2: 1.5, 4: 1.2, 8: 1.0}, False)],
)
def test_batches_are_served_from_a_fresh_session_warmed_to_the_chosen_size(
    demo_artifact_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    costs: dict[int, float],
    fresh: bool,
) -> None:
    """ONNX Runtime keeps the memory of the largest batch a session ran: when the plan caps
    batches below the limit, the session timed at every size is dropped for one warmed up
    only to the chosen size."""
    monkeypatch.setattr(batch_plan, "measure", lambda *args, **kwargs: costs)
    settings = Settings(artifact_dir=demo_artifact_dir, max_batch_size=8, model_workers=2)
    runner = ModelRunner(load_artifact(demo_artifact_dir), "cpu", intra_op_threads=2)
    opened: list[tuple[int, ModelRunner]] = []

    def single_thread(max_batch: int) -> ModelRunner:
        one = ModelRunner(load_artifact(demo_artifact_dir), "cpu", intra_op_threads=1)
        opened.append((max_batch, one))
        return one

    plan = batch_plan.plan_batches(runner, settings, single_thread)
    assert plan.max_batch_size == (2 if fresh else 8)
    assert [n for n, _ in opened] == ([8, 2] if fresh else [8])  # timed at up to the limit
    assert plan.runner is opened[-1][1]
