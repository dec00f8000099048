"""MODEL_CARD.md: what the model is, what it was trained on, how well it does, where not to
use it. Generated from the run directory and the manifest, so it cannot disagree with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mltag_artifact import Manifest

from ..config import Config
from ..rundir import TrainedRun

_METRIC_COLUMNS = ("mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr")


def short_name(path: str | Path) -> str:
    """`<folder>/<file>`: names data without leaking the machine's absolute paths."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def dataset_name(cfg: Config) -> str:
    """A short, path-free name for the training data."""
    return short_name(cfg.data.train)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_model_card(run: TrainedRun, manifest: Manifest) -> str:
    out: list[str] = [f"# {manifest.name} {manifest.version}", "", manifest.description, ""]
    out += _model_section(manifest)
    out += _data_section(run, manifest)
    out += _recipe_section(run, manifest)
    out += _metrics_section(manifest)
    out += _labels_section(run, manifest)
    out += _verification_and_use(manifest)
    return "\n".join(out)


def _model_section(manifest: Manifest) -> list[str]:
    arch = manifest.architecture
    prep = manifest.preprocessing
    details = arch.details
    export = details.get("export", {})
    input_text = (
        f"{prep.height}×{prep.width} {prep.channel_order}, {prep.input_dtype} {prep.layout}"
        + (" (raw 0..255 pixels; normalised inside the graph)" if prep.normalize_in_graph else "")
    )
    out = ["## Model", ""]
    out += [
        f"- Backbone: `{arch.backbone}` (timm); head: `{arch.head}`; loss: `{arch.loss}`.",
        f"- Output: per-label probabilities (B, {len(manifest.labels)}) = "
        f"{details.get('score', 'sigmoid')}"
        + (f" with s = {details['score_scale']:g}" if details.get("cosine") else "")
        + ", computed inside the graph.",
        f"- Parameters in the exported graph: {_fmt(arch.num_params)}; "
        f"GMACs per image: {_fmt(arch.gmacs, 3)}.",
        f"- Input: {input_text}; resize: {prep.resize} ({prep.interpolation}), mean "
        f"{list(prep.mean)}, std {list(prep.std)}.",
        f"- ONNX opset {manifest.onnx.opset}, dynamic batch axis"
        + (", int8 static QDQ" if "int8" in export else ", fp32")
        + ".",
    ]
    if arch.head == "gcn":
        out.append(
            "- GCN head: the label-graph channel attention a = σ(max_c G) does not depend on "
            "the image; it was computed from the trained weights and is a constant in the "
            "graph, so the head costs about as much as a linear one."
        )
    out.append("")
    return out


def _data_section(run: TrainedRun, manifest: Manifest) -> list[str]:
    cfg = run.config
    details = manifest.architecture.details
    n_val = run.final.get("val", {}).get("num_images")
    n_test = run.final.get("test", {}).get("num_images")
    if cfg.data.val:
        val_text = f"`{short_name(cfg.data.val)}`"
    else:
        val_text = f"{cfg.data.val_fraction:.0%} stratified hold-out of the training annotations"
    if n_val is not None:
        val_text += f", {n_val} images"
    if cfg.data.test:
        test_text = (
            f"`{short_name(cfg.data.test)}`, {n_test} images, evaluated once after training."
        )
    else:
        test_text = "none given: no untouched test measurement exists."
    return [
        "## Data",
        "",
        f"- Training annotations: `{details.get('data', {}).get('dataset', cfg.data.train)}` "
        f"({cfg.data.format} format), {len(manifest.labels)} labels.",
        f"- Validation: {val_text} (checkpoint selection, early stopping, threshold calibration).",
        f"- Test: {test_text}",
        f"- Images without any label: {cfg.data.empty_labels}.",
        "",
    ]


def _recipe_section(run: TrainedRun, manifest: Manifest) -> list[str]:
    cfg = run.config
    details = manifest.architecture.details
    selected = run.selected
    opt = cfg.optim
    aug = cfg.data.augment
    return [
        "## Training recipe",
        "",
        f"- Pretrained: {cfg.model.pretrained}; input {cfg.data.image_size}px (resize, no crop).",
        f"- Loss `{cfg.loss.name}` ({cfg.loss.reduction}): {details.get('loss_params', {})}.",
        f"- Optimiser: {opt.name}{' + SAM (rho ' + str(opt.sam_rho) + ')' if opt.sam else ''}, "
        f"lr {cfg.train.lr:g}, weight decay {opt.weight_decay:g}, schedule {opt.scheduler}, "
        f"batch {cfg.train.batch_size}, up to {cfg.train.epochs} epochs "
        f"({run.final.get('epochs_run', '?')} run"
        + (", stopped early" if run.final.get("stopped_early") else "")
        + ").",
        f"- EMA: {'decay ' + str(cfg.train.ema_decay) if cfg.train.ema else 'off'}; "
        f"selected weights: {selected.get('source', '?')} of epoch {selected.get('epoch', '?')} "
        f"(best validation mAP {_fmt(selected.get('mAP'))}).",
        f"- Augmentation: hflip {aug.hflip}, RandAugment "
        + (f"{aug.randaugment_ops}×{aug.randaugment_magnitude}" if aug.randaugment else "off")
        + f", Cutout p={aug.cutout} size {aug.cutout_size}.",
        f"- Seed {cfg.train.seed}. The full resolved config is the run's `config.yaml`.",
        "",
    ]


def _metrics_section(manifest: Manifest) -> list[str]:
    export = manifest.architecture.details.get("export", {})
    out = ["## Metrics", "", "Percent. `@thr` uses the calibrated per-label thresholds.", ""]
    rows = []
    for ev in manifest.evaluation:
        rows.append(
            [ev.split, ev.dataset, str(ev.num_images)]
            + [_fmt(ev.metrics.get(k)) for k in _METRIC_COLUMNS]
            + [ev.notes]
        )
    out += [_table(["split", "data", "images", *_METRIC_COLUMNS, "notes"], rows), ""]
    if "int8" in export:
        q = export["int8"]
        out += [
            f"int8: validation mAP {_fmt(q['val_mAP_int8'])} vs fp32 {_fmt(q['val_mAP_fp32'])} "
            f"(drop {_fmt(q['val_mAP_drop'])} points, bound {_fmt(q['max_drop'])}), "
            f"{q['calibration_images']} calibration images from {q['calibration_source']}, "
            f"about {_fmt(q['speedup_vs_fp32_batch8'])}× the fp32 speed at batch 8 on the "
            "export machine."
            + (
                " **The drop exceeds the bound; exported on request.**"
                if q.get("drop_exceeds_bound")
                else ""
            ),
            "",
        ]
    return out


def _labels_section(run: TrainedRun, manifest: Manifest) -> list[str]:
    by_label = {r.get("label"): r for r in run.per_class}
    label_rows = []
    for label, thr in zip(manifest.labels, manifest.thresholds, strict=True):
        r = by_label.get(label, {})
        label_rows.append([
            f"`{label}`",
            _fmt(r.get("train_positives")),
            _fmt(r.get("val_AP")),
            _fmt(r.get("test_AP")),
            f"{thr:.4f}",
        ])  # fmt: skip
    return [
        "## Per-label AP and thresholds",
        "",
        _table(["label", "train positives", "val AP", "test AP", "threshold"], label_rows),
        "",
        "Thresholds: "
        + str(manifest.architecture.details.get("thresholds"))
        + " — "
        + _calibration_text(manifest.architecture.details.get("calibration"))
        + " Override per request with `thresholds` / `min_score`.",
        "",
    ]


def _calibration_text(calibration: dict[str, Any] | None) -> str:
    """How the thresholds were chosen (metrics.json's `final.calibration`)."""
    floor = calibration.get("floor") if calibration else None
    at_least = f" Every threshold is at least {floor:g}." if floor is not None else ""
    if not calibration or calibration.get("rule", "f1") == "f1":
        return "F1-optimal per label on the validation split." + at_least
    text = (
        f"rule `{calibration['rule']}`: {calibration.get('note', '')}. "
        f"{calibration.get('labels_at_target')} labels reached the target on validation"
    )
    fallback = calibration.get("fallback_f1_labels") or []
    text += f"; {len(fallback)} fell back to F1-optimal"
    if calibration.get("test_labels_judged"):
        text += (
            f"; on test the target held for {calibration['test_labels_holding_target']} of the "
            f"{calibration['test_labels_judged']} of them that predicted anything (median "
            f"precision {100 * calibration['test_median_precision']:.1f}%)"
        )
    return text + "." + at_least


def _verification_and_use(manifest: Manifest) -> list[str]:
    export = manifest.architecture.details.get("export", {})
    parity = export.get("parity", {})
    return [
        "## Export verification",
        "",
        "- `onnx.checker` (full); artifact hash and the service's model checks passed.",
        f"- ONNX Runtime vs PyTorch on {parity.get('images', '?')} validation images through "
        f"the service's preprocessing: max |Δprobability| = {parity.get('max_abs_diff', 0):.2e} "
        f"(bound {parity.get('tolerance', 0):g}, on the fp32 graph).",
        f"- Exported with {export.get('exporter', 'torch.onnx')}.",
        "",
        "## Intended use",
        "",
        f"Tagging images with the {len(manifest.labels)} labels above, in images like the "
        "training data, served by `mltag-serve` (which applies the manifest's preprocessing and "
        "thresholds). Scores are independent per-label probabilities, not a distribution.",
        "",
        "## Limitations",
        "",
        "- Accuracy holds only for images like the training data; measure on your own images "
        "with `mltag-train evaluate --artifact` before relying on it.",
        "- Labels with few training positives (see the table) have unreliable AP and thresholds.",
        "- Calibrated thresholds maximise F1 on a small validation split; the @thr numbers on "
        "validation are optimistic.",
        "- Not for decisions about people, safety or anything with legal effect.",
        "",
    ]
