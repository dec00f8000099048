"""Tagger: thresholds (calibrated, global override, per-label overrides) and tag selection,
on a real artifact and ONNX Runtime session."""

from __future__ import annotations

import numpy as np
import pytest

from mltag_artifact import Artifact
from mltag_artifact.runner import ModelRunner
from mltag_artifact.tagger import Tagger


@pytest.fixture(scope="module")
def tagger(demo_artifact: Artifact) -> Tagger:
    return Tagger(demo_artifact, ModelRunner(demo_artifact, "cpu"))


def test_built_once_from_the_manifest(tagger: Tagger, demo_artifact: Artifact) -> None:
    m = demo_artifact.manifest
    assert tagger.labels == m.labels
    assert tagger.label_index == {label: i for i, label in enumerate(m.labels)}
    np.testing.assert_allclose(tagger.calibrated, m.thresholds)
    assert tagger.thresholds() is tagger.calibrated  # no copy per request without overrides
    with pytest.raises(ValueError, match="read-only"):
        tagger.calibrated[0] = 0.0


def test_override_precedence(tagger: Tagger) -> None:
    first, second = tagger.labels[:2]
    thr = tagger.thresholds(min_score=0.3, overrides={first: 0.9})
    assert thr[0] == pytest.approx(0.9)  # a per-label override beats min_score
    assert thr[1] == pytest.approx(0.3)  # min_score beats calibration
    only_label = tagger.thresholds(overrides={second: 0.05})
    assert only_label[1] == pytest.approx(0.05)
    np.testing.assert_allclose(np.delete(only_label, 1), np.delete(tagger.calibrated, 1))
    np.testing.assert_allclose(tagger.calibrated, tagger.manifest.thresholds)  # untouched


def test_tags_sorted_thresholded_and_cut_at_top_k(tagger: Tagger) -> None:
    n = len(tagger.labels)
    probs = np.linspace(0.05, 0.95, n).astype(np.float32)[::-1].copy()
    thr = np.full(n, 0.5, dtype=np.float32)
    tags = tagger.tags(probs, thr)
    assert [t[1] for t in tags] == sorted((float(p) for p in probs if p >= 0.5), reverse=True)
    assert tags[0][0] == tagger.labels[0]
    assert len(tagger.tags(probs, thr, top_k=1)) == 1
    assert tagger.unknown_labels([tagger.labels[0], "no-such-label"]) == ["no-such-label"]


def test_run_gives_probabilities(tagger: Tagger) -> None:
    batch = np.zeros((2, *tagger.runner.sample_shape), dtype=tagger.runner.dtype)
    probs = tagger.run(batch)
    assert probs.shape == (2, len(tagger.labels))
    assert probs.dtype == np.float32 and np.all((probs >= 0) & (probs <= 1))


def test_select_walks_the_hierarchy(demo_artifact: Artifact) -> None:
    """Ancestors transitively (yellow -> bright -> dark here, for the test's sake), scored by
    their best descendant; filters and top_k after."""
    from mltag_artifact import LabelInfo
    from mltag_artifact.tagger import Selection

    info = [LabelInfo() for _ in demo_artifact.manifest.labels]
    labels = demo_artifact.manifest.labels
    info[labels.index("yellow")] = LabelInfo(parents=["bright"], category="hue")
    info[labels.index("bright")] = LabelInfo(parents=["dark"], category="tone")
    manifest = demo_artifact.manifest.model_copy(update={"label_info": info})
    artifact = Artifact(demo_artifact.directory, manifest)
    tagger = Tagger(artifact, ModelRunner(artifact, "cpu"))
    probs = np.zeros(len(labels), dtype=np.float32)
    probs[labels.index("yellow")] = 0.9
    probs[labels.index("red")] = 0.6
    thr = np.full(len(labels), 0.5, dtype=np.float32)
    got = [
        (t.label, round(t.score, 2))
        for t in tagger.select(probs, thr, Selection(include_parents=True))
    ]
    assert got == [("yellow", 0.9), ("bright", 0.9), ("dark", 0.9), ("red", 0.6)]
    tone = tagger.select(
        probs, thr, Selection(include_parents=True, categories=frozenset({"tone"}))
    )
    assert [t.label for t in tone] == ["bright"]
    assert [t.label for t in tagger.select(probs, thr, Selection(top_k=1))] == ["yellow"]
    assert tagger.select(probs, thr)[0].parents == ["bright"]
