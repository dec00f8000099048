"""The paper's claims on OpenClipart, frozen-backbone regime: the peer (a plain timm classifier
trained with timm's AsymmetricLossMultiLabel) vs our heads x losses grid.

    python benchmarks/grid.py --data .cache/datasets/openclipart-scenes --out build/grid/scenes \
        [--size 224] [--epochs 12] [--seeds 0 1] [--rows peer linear+asl ml_decoder+aam]

Every row shares the ImageNet EfficientNet-Lite0 body (offline package weights), frozen: its
feature maps are computed once (train also flipped, as augmentation) and cached in --out. Each
row then trains only its head for the same epochs, batch, optimiser (AdamW, OneCycle) and data
order: the rows differ in head and loss only. This is what makes the full grid and several
seeds affordable on a 2-core CPU; whole-network fine-tuning is the other regime
(`benchmarks/peer_finetune.py` vs `mltag-train train`, see RESULTS.md).

Per row: test mAP, CF1/OF1 at 0.5 and at thresholds calibrated on val (`threshold_floor` as in
training), GMACs and ONNX Runtime CPU latency of the whole exported model (batch 1, 2 threads),
mean ± half-range over seeds. Prints a markdown table and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.loss import AsymmetricLossMultiLabel
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_training.config import Config, load_config  # noqa: E402
from model_training.data import MultilabelDataset, read_annotations  # noqa: E402
from model_training.data.transforms import EvalTransform, preprocessing_for  # noqa: E402
from model_training.losses import build_loss  # noqa: E402
from model_training.metrics import evaluate_scores, f1_optimal_thresholds  # noqa: E402
from model_training.models import Backbone, HeadContext, MultilabelClassifier, build_head  # noqa: E402
from model_training.models.classifier import head_params, is_cosine  # noqa: E402

BASE_CONFIG = ROOT / "configs" / "cpu_small.yaml"
HEADS = ("linear", "gcn", "ml_decoder")
LOSSES = ("bce", "asl", "aam")
ROWS = ("peer", *(f"{h}+{loss}" for h in HEADS for loss in LOSSES))
SPLITS = ("train", "val", "test")


def row_config(row: str, size: int) -> Config:
    head, loss = row.split("+")
    return load_config(
        BASE_CONFIG, [f"model.head={head}", f"loss.name={loss}", f"data.image_size={size}"]
    )


# --- features -------------------------------------------------------------------------------


def _body_session(size: int, threads: int, work: Path) -> Any:
    """The ImageNet Lite0 body as an ONNX Runtime session: ~10x faster than eager torch on CPU."""
    import onnxruntime as ort

    body = Backbone("efficientnet_lite0", pretrained=True).eval()
    path = work / f"body_{size}.onnx"
    torch.onnx.export(
        body,
        (torch.zeros(2, 3, size, size),),
        str(path),
        input_names=["x"],
        output_names=["features"],
        dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def extract_features(data_dir: Path, out: Path, size: int, threads: int) -> None:
    """Lite0 feature maps (N, views, D, h, w) as float16 .npy per split; train has 2 views."""
    cfg = load_config(BASE_CONFIG, [f"data.image_size={size}", "data.format=jsonl"])
    prep = preprocessing_for(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    labels: list[str] | None = None
    sess = None
    for split in SPLITS:
        target = out / f"{split}.npy"
        data = read_annotations(cfg.data, data_dir / f"{split}.jsonl", labels)
        labels = labels or data.labels
        if target.exists():
            continue
        sess = sess or _body_session(size, threads, out)
        views = 2 if split == "train" else 1
        loader = DataLoader(
            MultilabelDataset(data, EvalTransform(prep)), batch_size=32, num_workers=1
        )
        t0, done = time.perf_counter(), 0
        tmp = out / f"{split}.partial.npy"
        feats: Any = None
        for x, _ in loader:
            inputs = [x.numpy()] + ([x.flip(-1).numpy()] if views == 2 else [])
            f = [sess.run(None, {"x": v})[0] for v in inputs]
            if feats is None:
                shape = (len(data), views, *f[0].shape[1:])
                feats = np.lib.format.open_memmap(tmp, "w+", np.float16, shape)
            feats[done : done + len(x)] = np.stack(f, 1).astype(np.float16)
            done += len(x)
        feats.flush()
        del feats
        tmp.rename(target)
        np.save(out / f"{split}_targets.npy", data.targets)
        print(f"features {split}: {done} images in {time.perf_counter() - t0:.0f} s", flush=True)
    (out / "labels.txt").write_text("\n".join(labels or []) + "\n")


@dataclass
class Features:
    labels: list[str]
    x: dict[str, torch.Tensor]  # split -> (N, views, D, h, w) float16
    y: dict[str, np.ndarray]  # split -> (N, C) int8 in {1, 0, -1}


def load_features(out: Path) -> Features:
    labels = (out / "labels.txt").read_text().split("\n")[:-1]
    x = {s: torch.from_numpy(np.load(out / f"{s}.npy")) for s in SPLITS}
    y = {s: np.load(out / f"{s}_targets.npy") for s in SPLITS}
    return Features(labels, x, y)


# --- rows -----------------------------------------------------------------------------------


@dataclass
class Row:
    head: nn.Module  # (B, D, h, w) -> (B, C)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score_scale: float  # probabilities = sigmoid(scale * output)
    cosine: bool


def build_row(name: str, features: Features, size: int) -> Row:
    num_features, num_classes = features.x["train"].shape[2], len(features.labels)
    if name == "peer":
        # What a user does with timm alone: timm's own pooled classifier and timm's ASL.
        model = timm.create_model("efficientnet_lite0", num_classes=num_classes)
        pool, classifier = model.global_pool, model.get_classifier()  # type: ignore[operator]
        assert isinstance(pool, nn.Module)
        assert isinstance(classifier, nn.Module)
        peer_head: nn.Module = nn.Sequential(pool, classifier)
        asl = AsymmetricLossMultiLabel()
        return Row(peer_head, lambda out, y: asl(out, y.clamp(min=0)), 1.0, False)
    cfg = row_config(name, size)
    cosine = is_cosine(cfg)
    context = HeadContext(labels=features.labels, train_targets=features.y["train"])
    head = build_head(
        cfg.model.head, num_features, num_classes, cosine, context, **head_params(cfg)
    )
    loss_params = getattr(cfg.loss, cfg.loss.name).model_dump()
    loss = build_loss(cfg.loss.name, reduction=cfg.loss.reduction, **loss_params)
    return Row(head, loss, cfg.loss.aam.s if cosine else 1.0, cosine)


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]


def train_row(row: Row, features: Features, epochs: int, batch: int, lr: float, seed: int) -> None:
    """The same loop for every row: AdamW + OneCycle, seeded data order and view choice."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = features.x["train"], torch.from_numpy(features.y["train"]).float()
    n, views = x.shape[0], x.shape[1]
    steps = epochs * (n // batch)
    opt = torch.optim.AdamW(_param_groups(row.head, 1e-4), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=0.2, div_factor=100, final_div_factor=1e3
    )
    row.head.train()
    for _ in range(epochs):
        order = rng.permutation(n)
        view = rng.integers(0, views, n)
        for i in range(n // batch):
            idx = order[i * batch : (i + 1) * batch]
            xb = x[idx, view[idx]].float()
            loss = row.loss(row.head(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    row.head.eval()


def predict(row: Row, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    with torch.inference_mode():
        outs = [row.head(x[i : i + batch, 0].float()) for i in range(0, len(x), batch)]
    return torch.sigmoid(torch.cat(outs).float() * row.score_scale).numpy()


def evaluate_row(row: Row, features: Features, floor: float) -> dict[str, float]:
    val = predict(row, features.x["val"])
    test = predict(row, features.x["test"])
    thresholds = f1_optimal_thresholds(val, features.y["val"], floor=floor)
    summary = evaluate_scores(test, features.y["test"], thresholds).summary()
    return {k: float(summary[k]) for k in ("mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr")}


def measure_speed(
    names: list[str], features: Features, size: int, threads: int, repeats: int
) -> dict[str, dict[str, float]]:
    """GMACs and ONNX Runtime CPU latency (batch 1) of body + each row's head, exported the way
    `mltag-train export` does (uint8 NHWC in, probabilities out). Speed does not depend on the
    weights, so fresh heads are used; rows are timed interleaved, round by round, and the
    median is reported (shared machines drift)."""
    import onnxruntime as ort

    from model_training.export.graph import (
        ExportGraph,
        count_gmacs,
        example_input,
        export_onnx,
        preprocessing_for_input,
    )

    cfg = load_config(BASE_CONFIG, [f"data.image_size={size}"])
    prep = preprocessing_for_input(preprocessing_for(cfg.data), "uint8-nhwc")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    x = example_input(prep, batch=1).numpy()
    sessions, out = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = build_row(name, features, size)
            body = Backbone("efficientnet_lite0", pretrained=False)
            classifier = MultilabelClassifier(body, row.head, row.cosine, row.score_scale)
            graph = ExportGraph(classifier, prep)
            path = str(Path(tmp) / f"{name}.onnx")
            export_onnx(graph, prep, path, len(features.labels))
            sessions[name] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            sessions[name].run(None, {"image": x})
            out[name] = {"GMACs": count_gmacs(graph, prep) or float("nan")}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, {"image": x})
            times[name].append(time.perf_counter() - t0)
    for name in names:
        out[name]["latency_ms"] = 1e3 * statistics.median(times[name])
    return out


# --- table ----------------------------------------------------------------------------------

METRICS = ("mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr")


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {(max(values) - min(values)) / 2:.1f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| row | seeds | test mAP | CF1@0.5 | OF1@0.5 | CF1@cal | OF1@cal | GMACs | ORT ms (b1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["rows"].items():
        runs = r["seeds"]
        cells = [_cell([run[m] for run in runs.values()]) for m in METRICS]
        label = "peer (timm classifier + timm ASL)" if name == "peer" else name
        lines.append(
            f"| {label} | {len(runs)} | {' | '.join(cells)} | "
            f"{r.get('GMACs', float('nan')):.3f} | {r.get('latency_ms', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with {train,val,test}.jsonl")
    ap.add_argument("--out", type=Path, required=True, help="feature cache and results.json")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50, help="latency rounds (all rows each)")
    ap.add_argument("--features-only", action="store_true")
    ap.add_argument("--no-speed", action="store_true", help="skip the GMACs/latency pass")
    args = ap.parse_args(argv)

    extract_features(args.data, args.out, args.size, args.threads)
    if args.features_only:
        return 0
    torch.set_num_threads(args.threads)
    features = load_features(args.out)
    floor = float(load_config(BASE_CONFIG).train.threshold_floor)  # a number in that config
    results_path = args.out / "results.json"
    results: dict[str, Any] = (
        json.loads(results_path.read_text()) if results_path.exists() else {"rows": {}}
    )
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    for name in args.rows:
        entry = results["rows"].setdefault(name, {"seeds": {}})
        for seed in args.seeds:
            t0 = time.perf_counter()
            row = build_row(name, features, args.size)
            train_row(row, features, args.epochs, args.batch, args.lr, seed)
            entry["seeds"][str(seed)] = evaluate_row(row, features, floor)
            entry["seeds"][str(seed)]["train_s"] = time.perf_counter() - t0
            print(f"{name} seed {seed}: {entry['seeds'][str(seed)]}", flush=True)
            results_path.write_text(json.dumps(results, indent=2))
    if not args.no_speed:
        speed = measure_speed(
            list(results["rows"]), features, args.size, args.threads, args.repeats
        )
        for name, values in speed.items():
            results["rows"][name].update(values)
        results_path.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
