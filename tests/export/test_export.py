"""Export of real (tiny) training runs: every head, cosine and plain; parity with PyTorch;
manifest round-trip; the GCN constant from trained weights; the service serving the result;
int8; corrupted artifacts; evaluate_artifact against the PyTorch evaluation; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from sklearn.metrics import average_precision_score

from mltag_artifact import ArtifactError, load_artifact, parse_manifest, write_artifact
from mltag_artifact.preprocess import preprocess
from mltag_artifact.runner import ModelLoadError, ModelRunner
from model_training.data import read_annotations
from model_training.data.transforms import preprocessing_for
from model_training.export import (
    ExportError,
    evaluate_artifact,
    export_run,
    load_run,
)
from model_training.export.exporter import torch_scores
from model_training.models.heads import GCNHead
from model_training.rundir import load_trained
from model_training.trainer import evaluate_run

from .conftest import RunFactory, copy_run

# (head, loss, extra overrides): every registered head, with cosine (AAM) and plain output.
CASES = [
    ("linear", "aam", ()),
    ("linear", "bce", ()),
    ("ml_decoder", "aam", ()),
    ("ml_decoder", "bce", ()),
    ("gcn", "aam", ()),
    ("gcn", "asl", ()),
]


def _samples(paths: list[Path], prep: object) -> np.ndarray:
    return np.stack([preprocess(p.read_bytes(), prep) for p in paths])  # type: ignore[arg-type]


def _ort(artifact_dir: Path, paths: list[Path]) -> np.ndarray:
    artifact = load_artifact(artifact_dir)
    runner = ModelRunner(artifact, provider="cpu", intra_op_threads=1)
    return runner.run(_samples(paths, artifact.manifest.preprocessing))


@torch.no_grad()
def _independent_torch_probs(run: Path, paths: list[Path]) -> np.ndarray:
    """σ(s·cos) or σ(logit) written out here, not through the classifier's `scores`."""
    model, cfg, _, _ = load_trained(run)
    x = torch.from_numpy(_samples(paths, preprocessing_for(cfg.data)))
    raw = model(x)  # (B, C): cosines or logits
    if cfg.loss.name == "aam":
        assert raw.abs().max() <= 1.0 + 1e-6  # really cosines
        return torch.sigmoid(cfg.loss.aam.s * raw).numpy()
    return torch.sigmoid(raw).numpy()


def _test_images(coco: tuple[Path, Path]) -> list[Path]:
    return sorted((coco[1].parent / "images").glob("img_3_*.png"))[:8]


def test_registered_heads_are_all_covered() -> None:
    from model_training.models import HEADS

    assert sorted({head for head, _, _ in CASES}) == HEADS.names()


@pytest.mark.parametrize(("head", "loss", "extra"), CASES)
def test_export_parity_and_manifest_round_trip(
    make_run: RunFactory,
    coco: tuple[Path, Path],
    tmp_path: Path,
    head: str,
    loss: str,
    extra: tuple[str, ...],
) -> None:
    run = make_run(head, loss, *extra)
    out = tmp_path / "artifact"
    artifact = export_run(run, out)
    m = artifact.manifest

    # Round trip: the file on disk parses to the same manifest, hash verified on load.
    assert parse_manifest((out / "manifest.json").read_bytes()) == m
    assert load_artifact(out).manifest == m
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert m.labels == ["red", "green", "blue", "yellow"]
    assert m.label_info is not None  # COCO's supercategories
    assert [i.category for i in m.label_info] == ["warm", "cool", "cool", "warm"]
    assert m.thresholds == pytest.approx([thresholds[label] for label in m.labels])
    p = m.preprocessing
    assert (p.input_dtype, p.layout, p.normalize_in_graph) == ("uint8", "NHWC", True)
    assert (p.height, p.width, p.mean, p.std) == (32, 32, (0.5,) * 3, (0.5,) * 3)
    assert m.onnx.opset == 17
    assert m.architecture.head == head and m.architecture.loss == loss
    assert m.architecture.num_params and m.architecture.num_params > 0
    details = m.architecture.details
    assert details["cosine"] is (loss == "aam")
    assert details["score_scale"] == pytest.approx(23.0 if loss == "aam" else 1.0)
    assert details["export"]["parity"]["max_abs_diff"] <= 1e-4
    final = json.loads((run / "metrics.json").read_text())["final"]
    by_split = {e.split: e for e in m.evaluation}
    assert by_split["val"].metrics["mAP"] == pytest.approx(final["val"]["mAP"])
    assert by_split["val"].num_images == final["val"]["num_images"]
    assert by_split["test"].metrics["mAP"] == pytest.approx(final["test"]["mAP"])
    card = (out / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Training recipe", "## Metrics", "## Per-label AP",
                    "## Intended use", "## Limitations", "`yellow`"):  # fmt: skip
        assert section in card

    # Dynamic batch, probabilities, and the score semantics checked independently.
    images = _test_images(coco)
    got = _ort(out, images)
    assert got.shape == (len(images), 4)
    assert got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, _independent_torch_probs(run, images), atol=1e-4, rtol=0)
    np.testing.assert_allclose(_ort(out, images[:1]), got[:1], atol=1e-6, rtol=0)


def test_float32_nchw_input_format(make_run: RunFactory, tmp_path: Path) -> None:
    run = make_run("linear", "aam")
    artifact = export_run(run, tmp_path / "a", input_format="float32-nchw", opset=18)
    p = artifact.manifest.preprocessing
    assert (p.input_dtype, p.layout, p.normalize_in_graph) == ("float32", "NCHW", False)
    assert artifact.manifest.onnx.opset == 18
    assert onnx.load(str(artifact.onnx_path)).opset_import[0].version == 18
    assert artifact.manifest.architecture.details["export"]["parity"]["max_abs_diff"] <= 1e-4


def test_gcn_attention_constant_comes_from_trained_weights(
    make_run: RunFactory, coco: tuple[Path, Path], tmp_path: Path
) -> None:
    run = copy_run(make_run("gcn", "aam"), tmp_path / "run")
    best = run / "checkpoints" / "best.pt"
    ckpt = torch.load(best, weights_only=False)
    before = {k: v.clone() for k, v in ckpt["model"].items()}
    g = torch.Generator().manual_seed(1)
    for key in ("head.gc1.weight", "head.gc2.weight"):
        w = ckpt["model"][key]
        ckpt["model"][key] = w + 0.5 * torch.randn(w.shape, generator=g)
    torch.save(ckpt, best)

    out = tmp_path / "artifact"
    export_run(run, out)
    model, _, _, _ = load_trained(run)
    head = model.head
    assert isinstance(head, GCNHead)
    with torch.no_grad():
        trained_a = head.channel_attention().numpy()
    graph = onnx.load(str(out / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    # The graph layers, embeddings and adjacency are gone; the attention is a constant.
    assert not [n for n in inits if "gc1" in n or "gc2" in n or "adjacency" in n]
    constants = [v for v in inits.values() if v.shape == trained_a.shape]
    assert sum(np.allclose(v, trained_a, atol=1e-6) for v in constants) == 1

    # ORT equals a PyTorch forward with the perturbed (trained) weights ...
    images = _test_images(coco)
    got = _ort(out, images)
    np.testing.assert_allclose(got, _independent_torch_probs(run, images), atol=1e-4, rtol=0)
    # ... and not the model before the perturbation: the constant really followed the weights.
    model.load_state_dict(before)
    with torch.no_grad():
        assert np.abs(head.channel_attention().numpy() - trained_a).max() > 1e-2


def test_gcn_graph_costs_what_the_linear_one_does(make_run: RunFactory, tmp_path: Path) -> None:
    """Structure, not timing: the exported GCN model is the linear one plus one multiply."""
    gcn = export_run(make_run("gcn", "aam"), tmp_path / "gcn")
    lin = export_run(make_run("linear", "aam"), tmp_path / "lin")
    ops = {}
    for name, art in (("gcn", gcn), ("lin", lin)):
        ops[name] = sorted(n.op_type for n in onnx.load(str(art.onnx_path)).graph.node)
    assert len(ops["gcn"]) - len(ops["lin"]) <= 2
    assert not {"MatMul", "Gemm"} & set(ops["gcn"]) - set(ops["lin"])
    assert gcn.manifest.architecture.gmacs == pytest.approx(lin.manifest.architecture.gmacs,
                                                            rel=0.01)  # fmt: skip


def test_parity_failure_fails_loudly_and_writes_nothing(
    make_run: RunFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model_training.export.exporter as exporter

    real = exporter.torch_scores
    monkeypatch.setattr(exporter, "torch_scores", lambda *a, **k: real(*a, **k) * 0.999)
    out = tmp_path / "artifact"
    with pytest.raises(ExportError, match=r"ONNX Runtime and PyTorch disagree.*refusing"):
        export_run(make_run("linear", "aam"), out)
    assert not out.exists()
    assert not list(tmp_path.glob(".mltag-export-*"))


def test_export_refusals(make_run: RunFactory, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_run(tmp_path / "nope", tmp_path / "a")
    run = copy_run(make_run("linear", "aam"), tmp_path / "run")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_run(run, tmp_path / "full")
    export_run(run, tmp_path / "full", overwrite=True)
    assert not (tmp_path / "full" / "x").exists()
    (run / "thresholds.json").unlink()
    with pytest.raises(ExportError, match="thresholds"):
        export_run(run, tmp_path / "b")


def test_service_loads_the_export_and_tags(
    make_run: RunFactory, coco: tuple[Path, Path], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    out = tmp_path / "artifact"
    export_run(make_run("gcn", "aam"), out)
    image = _test_images(coco)[0]
    expected = _ort(out, [image])[0]
    settings = Settings(artifact_dir=out, warmup_runs=1, max_batch_size=4, intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        labels = client.get("/labels")
        assert labels.status_code == 200
        r = client.post(
            "/tag",
            params={"all_scores": "true"},
            files={"image": (image.name, image.read_bytes(), "image/png")},
        )
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["error"] is None
    assert list(result["scores"]) == ["red", "green", "blue", "yellow"]
    np.testing.assert_allclose(list(result["scores"].values()), expected, atol=1e-3)
    thresholds = load_artifact(out).manifest.threshold_by_label
    tagged = {t["label"] for t in result["tags"]}
    assert tagged == {k for k, s in zip(thresholds, expected, strict=True)
                      if s >= thresholds[k]}  # fmt: skip
    assert r.json()["model"]["name"] == "tiny-test"


def test_corrupted_artifacts_are_rejected(make_run: RunFactory, tmp_path: Path) -> None:
    good = export_run(make_run("linear", "bce"), tmp_path / "good")

    changed = tmp_path / "changed"
    shutil.copytree(good.directory, changed)
    data = bytearray((changed / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (changed / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(changed)

    # Labels that do not match the model's output: hash fine, the runner refuses.
    m = good.manifest
    more = {"labels": [*m.labels, "purple"], "thresholds": [*m.thresholds, 0.5]}
    wrong = m.model_copy(update={**more, "label_info": None})
    bad = write_artifact(tmp_path / "labels", wrong, good.onnx_path, "card", good.explain_path)
    with pytest.raises(ModelLoadError, match="outputs 4 scores but the manifest lists 5"):
        ModelRunner(load_artifact(bad.directory), provider="cpu")

    # A hand edit of labels without thresholds: the manifest itself is invalid.
    edited = tmp_path / "edited"
    shutil.copytree(good.directory, edited)
    doc = json.loads((edited / "manifest.json").read_text())
    doc["labels"].append("purple")
    (edited / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="thresholds has 4 entries but labels has 5"):
        load_artifact(edited)


def test_int8_static_qdq(make_run: RunFactory, tmp_path: Path) -> None:
    run = make_run("linear", "aam")
    artifact = export_run(run, tmp_path / "int8", int8=True, calib_images=16, max_int8_drop=100)
    facts = artifact.manifest.architecture.details["export"]["int8"]
    assert facts["calibration_images"] == 16
    assert facts["val_mAP_drop"] == pytest.approx(facts["val_mAP_fp32"] - facts["val_mAP_int8"])
    nodes = onnx.load(str(artifact.onnx_path)).graph.node
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in nodes}
    # The backbone is quantised; the head (cosines scaled by s before σ) stays float, and so
    # does the stem: the first convolution reads float weights and the float image.
    assert not [n.name for n in nodes if n.op_type == "QuantizeLinear" and "/head/" in n.name]
    stem = next(n for n in nodes if n.op_type == "Conv")
    producers = {o: n.op_type for n in nodes for o in n.output}
    assert "DequantizeLinear" not in {producers.get(i) for i in stem.input}
    assert any(e.metrics.get("mAP_fp32") is not None for e in artifact.manifest.evaluation)
    assert "int8: validation mAP" in (artifact.directory / "MODEL_CARD.md").read_text()

    # Bound exceeded (any drop > -1 points... made impossible): refused, nothing written.
    with pytest.raises(ExportError, match="export refused"):
        export_run(run, tmp_path / "refused", int8=True, calib_images=8, max_int8_drop=-1000)
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match="exported anyway"):
        loud = export_run(run, tmp_path / "loud", int8=True, calib_images=8,
                          max_int8_drop=-1000, allow_int8_drop=True)  # fmt: skip
    assert loud.manifest.architecture.details["export"]["int8"]["drop_exceeds_bound"] is True
    assert "exceeds the bound" in (loud.directory / "MODEL_CARD.md").read_text()


def test_int8_float_stages_keep_the_first_stages_float(
    make_run: RunFactory, tmp_path: Path
) -> None:
    run = make_run("linear", "aam")
    artifact = export_run(run, tmp_path / "int8", int8=True, calib_images=8, max_int8_drop=100,
                          int8_float_stages=1)  # fmt: skip
    nodes = onnx.load(str(artifact.onnx_path)).graph.node
    producers = {o: n.op_type for n in nodes for o in n.output}

    def quantised_convs(stage: str) -> list[bool]:
        return [
            "DequantizeLinear" in {producers.get(i) for i in n.input}
            for n in nodes
            if n.op_type == "Conv" and stage in n.name
        ]

    assert quantised_convs("/blocks.0/") and not any(quantised_convs("/blocks.0/"))
    assert any(quantised_convs("/blocks.1/"))  # the rest of the backbone is int8
    facts = artifact.manifest.architecture.details["export"]["int8"]
    assert "backbone stages 0-0" in facts["float_parts"]


def test_evaluate_artifact_matches_pytorch(
    make_run: RunFactory, coco: tuple[Path, Path], tmp_path: Path
) -> None:
    run = make_run("linear", "aam", epochs=3)
    out = tmp_path / "artifact"
    export_run(run, out)
    test = coco[1]
    onnx_result = evaluate_artifact(out, test)
    torch_result = evaluate_run(run, test, device="cpu")
    got, want = onnx_result["metrics"], torch_result["metrics"]
    assert got["num_images"] == want["num_images"] == 32
    assert got["mAP"] == pytest.approx(want["mAP"], abs=0.1)
    assert got["OF1@thr"] == pytest.approx(want["OF1@thr"], abs=0.5)
    assert [r["label"] for r in onnx_result["per_class_ap"]] == ["red", "green", "blue", "yellow"]
    # Per class, AP from ONNX Runtime equals AP from PyTorch wherever no positive/negative pair
    # of scores is closer than twice their difference (~1e-7): such near-ties may swap, which
    # is numerics, not a bug (an untrained ML-Decoder moved 0.8 mAP so). Most classes must
    # qualify, or the check would say nothing.
    data = read_annotations(load_run(run).config.data, test, None)
    scores = torch_scores(load_run(run), data.images)
    ort_scores = _ort(out, data.images)
    diff = np.abs(ort_scores - scores).max()
    assert diff <= 1e-4
    checked = 0
    for c in range(scores.shape[1]):
        order = np.argsort(scores[:, c])
        mixed = data.targets[order[1:], c] != data.targets[order[:-1], c]
        if mixed.any() and np.diff(scores[order, c])[mixed].min() <= 2 * diff:
            continue
        t = data.targets[:, c] > 0
        got_ap = average_precision_score(t, ort_scores[:, c])
        assert got_ap == pytest.approx(average_precision_score(t, scores[:, c]), abs=1e-9)
        checked += 1
    assert checked >= scores.shape[1] - 1


def _cli(argv: list[str]) -> int:
    from model_training.cli import main

    return main(argv)


def test_cli_export_and_evaluate(
    make_run: RunFactory,
    coco: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = make_run("linear", "aam")
    out = tmp_path / "artifact"
    assert _cli(["export", "--run", str(run), "--output", str(out), "--opset", "17",
                 "--name", "cli-model", "--version", "2.0.0"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "cli-model 2.0.0"
    assert summary["parity_max_abs_diff"] <= 1e-4
    report = tmp_path / "eval.json"
    assert _cli(["evaluate", "--artifact", str(out), "--data", str(coco[1]),
                 "--output", str(report)]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_images"] == 32
    full = json.loads(report.read_text())
    assert len(full["per_class_ap"]) == 4
    assert full["metrics"]["mAP"] == pytest.approx(printed["mAP"], abs=0.01)

    assert _cli(["export", "--run", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _cli(["export", "--run", str(run), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert _cli(["evaluate", "--artifact", str(tmp_path / "missing"), "--data", "x.json"]) == 2
    assert "invalid artifact" in capsys.readouterr().err


def test_cli_module_imports_without_torch() -> None:
    import subprocess
    import sys

    code = "import sys, model_training.export.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_run_reports_selected_weights(make_run: RunFactory) -> None:
    run = load_run(make_run("linear", "aam"))
    assert run.selected["source"] in ("raw", "ema")
    assert run.labels == ["red", "green", "blue", "yellow"]
    assert read_annotations(run.config.data, run.config.data.train, run.labels).labels == run.labels


def test_precision_target_calibration_is_recorded_and_recalibration_rewrites(
    make_run: RunFactory, tmp_path: Path
) -> None:
    from model_training.cli import main

    run = copy_run(make_run("linear", "bce", "train.calibrate=precision:0.8"), tmp_path / "r")
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["calibration"]["rule"] == "precision:0.8"
    assert "CF1@0.5" in final["test"] and "CF1@thr" in final["test"]
    artifact = export_run(run, tmp_path / "a")
    details = artifact.manifest.architecture.details
    assert details["calibration"]["rule"] == "precision:0.8"
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "precision:0.8" in card
    # the same run recalibrated to F1 without training: thresholds and metrics rewritten
    before = json.loads((run / "thresholds.json").read_text())
    assert main(["calibrate", "--run", str(run), "--rule", "f1", "--device", "cpu"]) == 0
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["calibration"]["rule"] == "f1"
    assert final["selected"]  # the training facts survive
    after = json.loads((run / "thresholds.json").read_text())
    assert set(after) == set(before)
    assert main(["calibrate", "--run", str(run), "--rule", "precision:3"]) == 2
