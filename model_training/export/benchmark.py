"""Latency measurements behind the exporter's choices (ONNX Runtime, CPU, the service's
session options and preprocessing code). Weights are random: speed does not depend on them.

    python -m model_training.export.benchmark [--backbone efficientnet_lite0] [--size 224]
        [--labels 80] [--threads 2] [--repeats 15]

1. Input format: uint8 NHWC normalised in the graph vs float32 NCHW normalised by numpy
   (the service's `to_array`), per image, from a resized RGB image to probabilities.
2. GCN head (attention frozen to a constant) vs the linear head on the same backbone, and the
   GCN branch left in the graph.
3. int8 static QDQ vs fp32 (calibrated on synthetic images; speed only).

Shared machines swing a lot: variants are interleaved and the median of `repeats` rounds is
reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import to_array
from mltag_artifact.runner import session_options

from ..config import load_config
from ..data.transforms import preprocessing_for
from ..models import build_model
from .graph import ExportGraph, InputFormat, export_onnx, preprocessing_for_input
from .quantize import quantize_static_qdq


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = session_options(threads)  # the service's options
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _model(backbone: str, head: str, size: int, labels: int) -> Any:
    cfg = load_config(
        None,
        [f"model.backbone={backbone}", f"model.head={head}", f"data.image_size={size}",
         "loss.name=aam"],
    )  # fmt: skip
    names = [f"label_{i:03d}" for i in range(labels)]
    targets = (np.random.default_rng(0).random((500, labels)) < 0.1).astype(np.int8)
    torch.manual_seed(0)
    return build_model(cfg, names, train_targets=targets).eval(), preprocessing_for(cfg.data)


def _export(
    model: Any, base: Preprocessing, fmt: InputFormat, path: Path, labels: int, freeze: bool = True
) -> Preprocessing:
    prep = preprocessing_for_input(base, fmt)
    export_onnx(ExportGraph(model, prep, freeze=freeze), prep, str(path), labels)
    return prep


def _runner(sess: Any, x: np.ndarray) -> Callable[[], object]:
    return lambda: sess.run(None, {"image": x})


def _pipeline(sess: Any, images: list[Image.Image], prep: Preprocessing) -> Callable[[], object]:
    """Resized images -> model input (the service's `to_array`) -> probabilities."""

    def call() -> object:
        x = np.stack([to_array(im, prep) for im in images])
        return sess.run(None, {"image": x})

    return call


def _to_arrays(images: list[Image.Image], prep: Preprocessing) -> Callable[[], object]:
    return lambda: [to_array(im, prep) for im in images]


def run(
    backbone: str = "efficientnet_lite0",
    size: int = 224,
    labels: int = 80,
    threads: int = 2,
    repeats: int = 15,
    batches: tuple[int, ...] = (1, 16),
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {
        "backbone": backbone,
        "size": size,
        "labels": labels,
        "threads": threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        linear, base = _model(backbone, "linear", size, labels)
        gcn, _ = _model(backbone, "gcn", size, labels)
        u8 = _export(linear, base, "uint8-nhwc", work / "lin_u8.onnx", labels)
        f32 = _export(linear, base, "float32-nchw", work / "lin_f32.onnx", labels)
        _export(gcn, base, "uint8-nhwc", work / "gcn_u8.onnx", labels)
        _export(gcn, base, "uint8-nhwc", work / "gcn_live.onnx", labels, freeze=False)
        calib = [rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8) for _ in range(4)]
        quantize_static_qdq(work / "lin_u8.onnx", work / "lin_int8.onnx", calib, "image")
        names = ("lin_u8", "lin_f32", "gcn_u8", "gcn_live", "lin_int8")
        sess = {n: _session(work / f"{n}.onnx", threads) for n in names}

        for b in batches:
            images = [
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                for _ in range(b)
            ]
            x = np.stack([to_array(im, u8) for im in images])
            t = _interleaved(
                {
                    "uint8-nhwc": _pipeline(sess["lin_u8"], images, u8),
                    "float32-nchw": _pipeline(sess["lin_f32"], images, f32),
                    "numpy_to_array_float32": _to_arrays(images, f32),
                    "numpy_to_array_uint8": _to_arrays(images, u8),
                },
                repeats,
            )
            results[f"input_format_ms_per_image_b{b}"] = {k: 1e3 * v / b for k, v in t.items()}
            h = _interleaved({n: _runner(sess[n], x) for n in names if n != "lin_f32"}, repeats)
            results[f"model_ms_per_image_b{b}"] = {k: 1e3 * v / b for k, v in h.items()}
            results[f"ratios_b{b}"] = {
                "gcn_vs_linear": h["gcn_u8"] / h["lin_u8"],
                "gcn_branch_in_graph_vs_linear": h["gcn_live"] / h["lin_u8"],
                "int8_speedup": h["lin_u8"] / h["lin_int8"],
                "float32_in_vs_uint8_in": t["float32-nchw"] / t["uint8-nhwc"],
            }
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--labels", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args(argv)
    print(json.dumps(run(a.backbone, a.size, a.labels, a.threads, a.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
