"""`export_run`: training run directory -> verified artifact (model.onnx, manifest.json,
MODEL_CARD.md), written only through `mltag_artifact.write_artifact`.

Every export is verified before anything appears at the output path: `onnx.checker`, the
artifact re-read with its hash checked, the service's `ModelRunner` (input/output names, dtype,
label count, a warm-up at batch 1 and 4 that checks probabilities in [0, 1]), then ONNX Runtime
against PyTorch on real validation images decoded by the service's preprocessing (max abs
difference on probabilities <= `tolerance`). The explain graph (explain.onnx: per-label
heatmaps, see `.explain`) is verified the same way. Any failure raises `ExportError` and leaves
the output untouched.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mltag_artifact import (
    Architecture,
    Artifact,
    ArtifactError,
    Evaluation,
    ExplainGraph,
    Manifest,
    OnnxModel,
    load_artifact,
    write_artifact,
)

from ..data import LabelledSet
from ..data.hierarchy import dataset_hierarchy, label_info_for
from ..data.transforms import preprocessing_for
from ..metrics import evaluate_scores
from ..models.classifier import head_params
from ..rundir import RunDirError, TrainedRun, load_run
from .card import dataset_name, render_model_card, short_name
from .errors import ExportError
from .explain import explain_parity, trace_explain
from .graph import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportGraph,
    InputFormat,
    count_gmacs,
    export_onnx,
    preprocessing_for_input,
)
from .quantize import quantize_static_qdq
from .scoring import open_runner, runner_scores, sample_batches

log = logging.getLogger("mltag.export")

FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Int8Options:
    calib_data: str | Path | None = None  # None: drawn from the run's training split
    calib_images: int = 128
    max_drop: float = 1.0  # mAP points (0-100 scale) the int8 model may lose on validation
    allow_drop: bool = False  # True: export anyway and warn loudly
    float_stages: int = 0  # the backbone's first stages (`blocks.N`) that stay float

    def keep_float(self) -> tuple[str, ...]:
        return tuple(f"/blocks.{i}/" for i in range(self.float_stages))


@dataclass(frozen=True)
class _Plan:
    """How to export: `export_run`'s choices, resolved against the run's config."""

    opset: int
    input_format: InputFormat
    verify_images: int
    tolerance: float
    name: str | None
    version: str | None
    int8: Int8Options | None
    explain: bool = True


def export_run(
    run_dir: str | Path,
    output_dir: str | Path,
    opset: int | None = None,
    int8: bool = False,
    calib_data: str | Path | None = None,
    calib_images: int = 128,
    max_int8_drop: float = 1.0,
    allow_int8_drop: bool = False,
    int8_float_stages: int = 0,
    input_format: InputFormat = "uint8-nhwc",
    val_data: str | Path | None = None,
    verify_images: int = 32,
    tolerance: float = FP32_TOLERANCE,
    name: str | None = None,
    version: str | None = None,
    overwrite: bool = False,
    explain: bool = True,
) -> Artifact:
    """Export the selected model of a training run as a verified artifact at `output_dir`.

    - `opset`: ONNX opset (default: the run config's `export.opset`, 17).
    - `input_format`: `uint8-nhwc` (default: raw pixels in, normalised inside the graph) or
      `float32-nchw` (normalised by the client). uint8 is the faster one end to end: see
      benchmarks/RESULTS.md#uint8-input-normalised-in-the-graph.
    - `int8`: write the static-QDQ int8 model instead of fp32, calibrated on `calib_images`
      images (from the training split, or `calib_data`); refuses when its validation mAP is
      more than `max_int8_drop` points below fp32's, unless `allow_int8_drop` (then warns).
      `int8_float_stages`: the backbone's first stages stay float too (the high-resolution
      stages are where int8 loses accuracy; benchmarks/int8_calibration.py).
    - `val_data`: annotation file to verify on instead of the run's validation split.
    - `verify_images`: validation images used for the ORT-vs-PyTorch parity check.
    - `explain`: also write explain.onnx, the per-label heatmaps (`onnx.explain`).
    """
    with _run_dir_problems_as_export_errors():
        run = load_run(run_dir)
    cfg = run.config
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"{output} exists and is not empty; pass overwrite=True (--force)")
    _check_thresholds(run)
    int8_opts = Int8Options(calib_data, calib_images, max_int8_drop, allow_int8_drop,
                            int8_float_stages)  # fmt: skip
    plan = _Plan(opset or cfg.export.opset, input_format, verify_images, tolerance, name,
                 version, int8_opts if int8 else None, explain)  # fmt: skip
    with _run_dir_problems_as_export_errors():
        val = run.validation_set(val_data)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mltag-export-", dir=output.parent) as tmp:
        built = _build_verified(run, val, plan, Path(tmp))
        if output.exists():
            shutil.rmtree(output)
        os.replace(built, output)
    try:
        artifact = load_artifact(output)
    except ArtifactError as e:  # pragma: no cover - verified a moment ago in the same place
        raise ExportError(f"the written artifact does not load: {e}") from e
    log.info("wrote %s (%s, opset %d)", output, "int8" if int8 else "fp32", plan.opset)
    return artifact


def _check_thresholds(run: TrainedRun) -> None:
    if run.config.export.thresholds == "calibrated" and run.thresholds is None:
        raise ExportError(
            f"{run.directory} has no thresholds.json (unfinished run?); calibrated thresholds "
            "come from the validation split at the end of training (or set "
            "export.thresholds=fixed in the run config for 0.5 everywhere)"
        )


@contextmanager
def _run_dir_problems_as_export_errors() -> Iterator[None]:
    """A run directory (or the data it names) that cannot be read is an export failure."""
    try:
        yield
    except RunDirError as e:
        raise ExportError(str(e)) from None


def _build_verified(run: TrainedRun, val: LabelledSet, plan: _Plan, work: Path) -> Path:
    """Trace, check, stage and verify the artifact inside `work`; returns its directory."""
    prep = preprocessing_for_input(preprocessing_for(run.config.data), plan.input_format)
    graph = ExportGraph(run.model, prep)
    gmacs = count_gmacs(graph, prep)
    fp32 = _Graphs(work / "fp32.onnx", work / "fp32-explain.onnx" if plan.explain else None)
    _trace(run, graph, prep, fp32.model, plan.opset)
    spec = trace_explain(run, prep, fp32.explain, plan.opset) if fp32.explain else None
    manifest = build_manifest(run, prep, plan.opset, graph, gmacs, plan.name, plan.version,
                              spec)  # fmt: skip
    staged = write_artifact(work / "fp32", manifest, fp32.model, None, fp32.explain)
    fp32_artifact, fp32_runner = _open_verified(staged.directory)
    paths = val.images[: max(1, plan.verify_images)]
    diff = parity(run, fp32_runner, paths, plan.tolerance)
    log.info("parity: max |ORT - PyTorch| = %.3g on %d validation images", diff, len(paths))
    export_facts: dict[str, Any] = {
        "parity": {
            "max_abs_diff": diff,
            "tolerance": plan.tolerance,
            "images": len(paths),
            "against": "PyTorch, selected checkpoint, same decoded pixels",
        },
        "input_format": plan.input_format,
        "exporter": f"torch {torch.__version__} (TorchScript-based torch.onnx.export)",
    }
    if spec is not None:
        export_facts["explain_parity"] = explain_parity(run, fp32_runner, paths, plan.tolerance)
    extra_evals: list[Evaluation] = []
    final_dir = staged.directory
    if plan.int8 is not None:
        int8_dir, facts, evaluation = _quantize(run, val, prep, fp32_artifact, work, plan.int8)
        export_facts["int8"] = facts
        extra_evals.append(evaluation)
        final_dir = int8_dir
    final = load_artifact(final_dir, verify_hash=False)
    details = {**manifest.architecture.details, "export": export_facts}
    manifest = manifest.model_copy(
        update={
            "onnx": final.manifest.onnx,  # the shipped files' hashes
            "architecture": manifest.architecture.model_copy(update={"details": details}),
            "evaluation": [*manifest.evaluation, *extra_evals],
        }
    )
    write_artifact(final_dir, manifest, final.onnx_path, render_model_card(run, manifest),
                   final.explain_path)  # fmt: skip
    _open_verified(final_dir)  # exactly what ships: hash, names, dtype, labels, warm-up
    return final_dir


@dataclass(frozen=True)
class _Graphs:
    """Where one precision's ONNX files are staged: model.onnx's, and explain.onnx's."""

    model: Path
    explain: Path | None


def _trace(run: TrainedRun, graph: ExportGraph, prep: Any, path: Path, opset: int) -> None:
    t0 = time.perf_counter()
    try:
        export_onnx(graph, prep, str(path), len(run.labels), opset)
    except Exception as e:  # tracer/exporter errors: name the model and the opset
        cfg = run.config
        raise ExportError(
            f"torch.onnx.export failed for {cfg.model.backbone} + {cfg.model.head} at "
            f"opset {opset}: {type(e).__name__}: {e}"
        ) from e
    check_onnx(path, len(run.labels))
    log.info("traced and checked %s in %.1fs", path.name, time.perf_counter() - t0)


def check_onnx(path: Path, num_labels: int) -> None:
    """`onnx.checker` (full, with shape inference), one input, output (batch, C) with C fixed."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the exported model: {e}") from e
    model = onnx.load(str(path), load_external_data=False)
    if len(model.graph.input) != 1:
        raise ExportError(f"exported graph has {len(model.graph.input)} inputs; expected one")
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != num_labels or dims[0].dim_value:
        shape = [d.dim_value or d.dim_param for d in dims]
        raise ExportError(f"exported output shape is {shape}; expected ['batch', {num_labels}]")


def _open_verified(directory: Path) -> tuple[Artifact, Any]:
    from mltag_artifact.runner import ModelLoadError

    try:
        artifact = load_artifact(directory)
        runner = open_runner(artifact)
        runner.warm_up(1, 4)  # batch 1 and 4: dynamic batch, shape, probabilities in [0, 1]
    except (ArtifactError, ModelLoadError) as e:
        raise ExportError(f"the exported artifact fails the service's checks: {e}") from e
    return artifact, runner


@torch.no_grad()
def torch_scores(run: TrainedRun, paths: Sequence[Path], batch_size: int = 16) -> np.ndarray:
    """PyTorch probabilities of the run's model (float32 NCHW input, normalised by numpy as
    in training's evaluation transform)."""
    prep = preprocessing_for(run.config.data)
    model = run.model.eval()
    outs = [
        model.scores(torch.from_numpy(batch)).float().numpy()
        for batch in sample_batches(paths, prep, batch_size)
    ]
    return np.concatenate(outs)


def parity(run: TrainedRun, runner: Any, paths: Sequence[Path], tolerance: float) -> float:
    """Max |ORT − PyTorch| on probabilities over `paths`; raises ExportError above tolerance."""
    expected = torch_scores(run, paths)
    (got,) = runner_scores([runner], paths, runner.manifest.preprocessing)
    if got.shape != expected.shape:
        raise ExportError(f"ORT output {got.shape} but PyTorch {expected.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportError("ORT produced non-finite probabilities on validation images")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    worst = float(diff.max())
    if not worst <= tolerance:
        i, c = (int(v) for v in np.unravel_index(int(np.argmax(diff)), diff.shape))
        raise ExportError(
            f"ONNX Runtime and PyTorch disagree: max |Δprobability| = {worst:.3g} > {tolerance:g} "
            f"(image {paths[i]}, label {run.labels[c]!r}: ORT {got[i, c]:.6f}, PyTorch "
            f"{expected[i, c]:.6f}); the export is wrong, refusing to write it"
        )
    return worst


def _quantize(
    run: TrainedRun,
    val: LabelledSet,
    prep: Any,
    fp32_artifact: Artifact,
    work: Path,
    opts: Int8Options,
) -> tuple[Path, dict[str, Any], Evaluation]:
    """The int8 artifact staged in `work`, its facts for the manifest and its validation
    evaluation; raises (or, when allowed, warns) when it loses too much mAP."""
    with _run_dir_problems_as_export_errors():
        calib = run.calibration_images(opts.calib_data, opts.calib_images, run.config.train.seed)
    int8_onnx = work / "int8.onnx"
    t0 = time.perf_counter()
    keep = opts.keep_float()
    quantize_static_qdq(fp32_artifact.onnx_path, int8_onnx, sample_batches(calib, prep, 16),
                        INPUT_NAME, keep_float=keep)  # fmt: skip
    check_onnx(int8_onnx, len(run.labels))
    int8_explain = _quantize_explain(fp32_artifact, work, calib, prep, keep)
    log.info("int8: quantised with %d calibration images in %.1fs", len(calib),
             time.perf_counter() - t0)  # fmt: skip
    int8_staged = write_artifact(work / "int8", fp32_artifact.manifest, int8_onnx, None,
                                 int8_explain)  # fmt: skip
    _, int8_runner = _open_verified(int8_staged.directory)
    _, fp32_runner = _open_verified(fp32_artifact.directory)
    fp32_s, int8_s = runner_scores([fp32_runner, int8_runner], val.images, prep)
    fp32_map = evaluate_scores(fp32_s, val.targets).mAP
    int8_map = evaluate_scores(int8_s, val.targets).mAP
    drop = fp32_map - int8_map
    speed = _speedup(fp32_runner, int8_runner)
    facts: dict[str, Any] = {
        "method": "static QDQ (onnxruntime quantize_static, MinMax, per-channel int8 weights, "
        "uint8 activations)",
        "float_parts": "input normalisation, stem (first conv + activation)"
        + (f", backbone stages 0-{opts.float_stages - 1}" if opts.float_stages else "")
        + ", head, sigmoid",
        "calibration_images": len(calib),
        "calibration_source": str(opts.calib_data or "training split"),
        "val_mAP_fp32": fp32_map,
        "val_mAP_int8": int8_map,
        "val_mAP_drop": drop,
        "max_drop": opts.max_drop,
        "max_abs_diff_vs_fp32": float(np.abs(fp32_s - int8_s).max()),
        "speedup_vs_fp32_batch8": speed,
    }
    log.info("int8: val mAP %.2f vs fp32 %.2f (drop %.2f points), %.2fx the fp32 speed",
             int8_map, fp32_map, drop, speed)  # fmt: skip
    _check_int8_drop(facts, opts)
    evaluation = Evaluation(
        dataset=dataset_name(run.config),
        split="val",
        num_images=len(val.images),
        metrics={"mAP": int8_map, "mAP_fp32": fp32_map, "mAP_drop": drop},
        notes="ONNX Runtime at export: this int8 model vs the fp32 export, same images and "
        "preprocessing (the service's)",
    )
    return int8_staged.directory, facts, evaluation


def _quantize_explain(
    fp32_artifact: Artifact, work: Path, calib: list[Path], prep: Any, keep: tuple[str, ...]
) -> Path | None:
    """The explain graph quantised alike (same calibration, same scope), so that its
    probabilities agree with int8.onnx's; None when the artifact has none."""
    if fp32_artifact.explain_path is None:
        return None
    int8_explain = work / "int8-explain.onnx"
    quantize_static_qdq(
        fp32_artifact.explain_path,
        int8_explain,
        sample_batches(calib, prep, 16),
        INPUT_NAME,
        symbolic_shapes=False,
        keep_float=keep,
    )
    return int8_explain


def _check_int8_drop(facts: dict[str, Any], opts: Int8Options) -> None:
    """Refuse an int8 model that loses more than `opts.max_drop` validation mAP points, or
    with `opts.allow_drop` mark it in `facts` and warn loudly."""
    drop, int8_map, fp32_map = facts["val_mAP_drop"], facts["val_mAP_int8"], facts["val_mAP_fp32"]
    if math.isfinite(drop) and drop <= opts.max_drop:
        return
    message = (
        f"int8 model loses {drop:.2f} mAP points on validation ({int8_map:.2f} vs fp32 "
        f"{fp32_map:.2f}), more than the allowed {opts.max_drop:.2f}"
    )
    if not opts.allow_drop:
        raise ExportError(
            message + "; export refused (use fp32, more/better calibration images, or "
            "--allow-int8-drop to export it anyway)"
        )
    facts["drop_exceeds_bound"] = True
    banner = "!" * 78
    log.warning("%s\nWARNING: %s; exporting anyway (--allow-int8-drop)\n%s",
                banner, message, banner)  # fmt: skip
    # stacklevel: this function, _quantize, _build_verified, export_run, export_run's caller
    warnings.warn(message + "; exported anyway (allow_int8_drop)", stacklevel=5)


def _speedup(fp32_runner: Any, int8_runner: Any, batch: int = 8, repeats: int = 3) -> float:
    """fp32 time / int8 time on one batch, interleaved, best of `repeats` (indicative only)."""
    shape = (batch, *fp32_runner.sample_shape)
    x = np.random.default_rng(0).integers(0, 256, shape).astype(fp32_runner.dtype)
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for k, runner in enumerate((fp32_runner, int8_runner)):
            t0 = time.perf_counter()
            runner.run(x)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best[0] / best[1]


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and k != "num_images" and math.isfinite(float(v))
    }


def build_manifest(
    run: TrainedRun,
    prep: Any,
    opset: int,
    graph: ExportGraph,
    gmacs: float | None,
    name: str | None = None,
    version: str | None = None,
    explain: ExplainGraph | None = None,
) -> Manifest:
    cfg = run.config
    labels = run.labels
    if cfg.export.thresholds == "calibrated" and run.thresholds is not None:
        thresholds = [float(min(max(t, 0.0), 1.0)) for t in run.thresholds]
    else:
        thresholds = [0.5] * len(labels)
    cosine = bool(run.model.cosine)
    return Manifest(
        name=name or cfg.export.name,
        version=version or cfg.export.version,
        description=(
            f"{cfg.model.backbone} + {cfg.model.head} head ({'cosine' if cosine else 'logit'} "
            f"output), {cfg.loss.name} loss, {cfg.data.image_size}px, trained on "
            f"{dataset_name(cfg)}."
        ),
        labels=labels,
        thresholds=thresholds,
        label_info=label_info_for(dataset_hierarchy(cfg.data), labels),
        preprocessing=prep,
        onnx=OnnxModel(
            file="model.onnx",
            sha256="0" * 64,  # filled in by write_artifact
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            opset=opset,
            explain=explain,
        ),
        architecture=Architecture(
            backbone=cfg.model.backbone,
            head=cfg.model.head,
            loss=cfg.loss.name,
            num_params=sum(p.numel() for p in graph.parameters()),
            gmacs=round(gmacs, 4) if gmacs is not None else None,
            details=_details(run),
        ),
        evaluation=_training_evaluations(run),
    )


def _training_evaluations(run: TrainedRun) -> list[Evaluation]:
    """The PyTorch evaluations training recorded (metrics.json "final"): val, and test."""
    cfg = run.config
    evaluations = []
    for split, note in (
        ("val", "PyTorch, selected checkpoint; @thr metrics are optimistic on val (the "
         "thresholds were fitted on it)"),
        ("test", "PyTorch, selected checkpoint, evaluated once with the val-calibrated "
         "thresholds"),
    ):  # fmt: skip
        metrics = run.final.get(split)
        if metrics:
            evaluations.append(
                Evaluation(
                    dataset=short_name(cfg.data.val or cfg.data.train)
                    if split == "val"
                    else short_name(cfg.data.test or cfg.data.train),
                    split=split,
                    num_images=int(metrics.get("num_images", 0)),
                    metrics=_numeric(metrics),
                    notes=note,
                )
            )
    return evaluations


def _details(run: TrainedRun) -> dict[str, Any]:
    """The manifest's `architecture.details`: score semantics, hyper-parameters, data."""
    cfg = run.config
    model = run.model
    cosine = bool(model.cosine)
    loss_params = getattr(cfg.loss, cfg.loss.name, None)
    return {
        "cosine": cosine,
        "score": "sigmoid(s * cosine)" if cosine else "sigmoid(logit)",
        "score_scale": float(model.score_scale),  # type: ignore[arg-type]
        "head_params": head_params(cfg),
        "loss_params": loss_params.model_dump() if loss_params is not None else {},
        "selected_weights": run.selected,
        "trained_params": sum(p.numel() for p in model.parameters()),
        "image_size": cfg.data.image_size,
        "data": {
            "dataset": dataset_name(cfg),
            "format": cfg.data.format,
            "label_sep": cfg.data.label_sep,
            "empty_labels": cfg.data.empty_labels,
            "voc_difficult": cfg.data.voc_difficult,
        },
        "thresholds": cfg.export.thresholds
        if run.thresholds is not None
        else "fixed (no calibration)",
        "calibration": run.final.get("calibration") or {"rule": "f1"},
    }
