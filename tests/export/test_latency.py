"""Timing checks: slow (EfficientNet-Lite0 at 224 px) and sensitive to machine load."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_gcn_export_costs_within_a_few_percent_of_linear() -> None:
    from model_training.export.benchmark import gcn_vs_linear

    # The attention is a constant: the GCN model is the linear one plus one (B, D) multiply.
    ratio = min(gcn_vs_linear(repeats=7) for _ in range(2))  # best of two: load swings
    assert ratio < 1.05, ratio
