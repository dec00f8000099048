"""The pointing game and ONNX-vs-PyTorch parity of the heatmaps, for each head type.

A tiny model (timm's `test_efficientnet`, random init) is trained for a few epochs on clip
art pasted anywhere on blank 128 px canvases (tests/explain/pointing.py), exported with its
explain graph, and then shown one object in one quadrant: the object's label must put most of
its heatmap mass in that quadrant, and its hottest cell there. About 20 s per head on 2 cores.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mltag_artifact import Artifact, load_artifact
from mltag_artifact.heatmap import normalize
from mltag_artifact.preprocess import preprocess
from mltag_artifact.runner import ModelRunner
from model_training import plots
from model_training.config import load_config
from model_training.export import export_run
from model_training.rundir import load_run
from model_training.trainer import fit

from .pointing import CANVAS, LABELS, QUADRANTS, make_scenes, quadrant_canvas, quadrant_mass

HEADS = ["linear", "ml_decoder", "gcn"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scenes")
    return make_scenes(root, 192, 0, "train"), make_scenes(root, 32, 1, "test")


@pytest.fixture(scope="module", params=HEADS)
def trained(
    request: pytest.FixtureRequest,
    scenes: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, Artifact]:
    head: str = request.param
    train, test = scenes
    cfg = load_config(None, [
        f"data.train={train}", f"data.test={test}", "data.format=jsonl",
        f"data.image_size={CANVAS}", "data.num_workers=0", "data.val_fraction=0.25",
        "data.augment.randaugment=false", "data.augment.cutout=0",
        "model.backbone=test_efficientnet", f"model.head={head}", "loss.name=bce",
        "head.ml_decoder.embed_dim=32", "head.ml_decoder.ff_dim=64", "head.ml_decoder.num_heads=4",
        "optim.name=adamw", "optim.sam=false", "train.lr=0.01", "train.epochs=6",
        "train.batch_size=16", "train.device=cpu", "train.progress=false",
        "train.early_stop_patience=null", "export.name=pointing",
    ])  # fmt: skip
    run = tmp_path_factory.mktemp(f"run-{head}")
    shutil.rmtree(run)
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:  # the exporter never reads the plots
        mp.setattr(plots, "plot_pr_curves", lambda *a, **k: None)
        mp.setattr(plots, "plot_curves", lambda *a, **k: None)
        fit(cfg, run)
    out = tmp_path_factory.mktemp(f"artifact-{head}") / "a"
    export_run(run, out, verify_images=8)
    return head, run, load_artifact(out)


def _probe(artifact: Artifact, label: str, quadrant: str) -> np.ndarray:
    buf = io.BytesIO()
    quadrant_canvas(label, quadrant).save(buf, "PNG")
    return preprocess(buf.getvalue(), artifact.manifest.preprocessing)[None]


def test_pointing_game(trained: tuple[str, Path, Artifact]) -> None:
    head, _, artifact = trained
    spec = artifact.manifest.onnx.explain
    assert spec is not None and spec.method == ("attention" if head == "ml_decoder" else "cam")
    runner = ModelRunner(artifact, provider="cpu")
    for label in LABELS:
        c = artifact.manifest.labels.index(label)
        for quadrant in QUADRANTS:
            _, maps = runner.run_explain(_probe(artifact, label, quadrant))
            heat = normalize(maps[0, c])  # as the service shows it
            mass = quadrant_mass(heat, quadrant)
            assert mass > 0.5, f"{head}: {label} in {quadrant}: {mass:.2f} of the mass there"
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hot = f"{'top' if y < heat.shape[0] / 2 else 'bottom'}-"
            hot += "left" if x < heat.shape[1] / 2 else "right"
            assert hot == quadrant, f"{head}: {label} in {quadrant}: hottest cell at {hot}"


def test_onnx_heatmaps_match_pytorch(trained: tuple[str, Path, Artifact]) -> None:
    head, run_dir, artifact = trained
    facts = artifact.manifest.architecture.details["export"]["explain_parity"]
    assert facts["heatmap_max_rel_diff"] <= facts["heatmap_tolerance"]
    run = load_run(run_dir)
    model = run.model.eval()
    runner = ModelRunner(artifact, provider="cpu")
    prep = artifact.manifest.preprocessing
    x = np.concatenate([_probe(artifact, label, "top-left") for label in LABELS])
    ort_p, ort_m = runner.run_explain(x)
    mean, std = np.asarray(prep.mean, np.float32), np.asarray(prep.std, np.float32)
    batch = ((x.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    with torch.no_grad():
        pt_p, pt_m = model.explain(torch.from_numpy(np.ascontiguousarray(batch)))
    np.testing.assert_allclose(ort_p, pt_p.numpy(), atol=1e-4)
    scale = np.maximum(np.abs(pt_m.numpy()).max(axis=(2, 3), keepdims=True), 1.0)
    assert np.max(np.abs(ort_m - pt_m.numpy()) / scale) < 1e-3, head
