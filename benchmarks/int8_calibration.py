"""int8 static QDQ variants of a float artifact, measured on the validation split: the
activation calibration method, the number of calibration images, and which stages stay float.
What `mltag-train export --int8` should do for a model is chosen from this table.

    make default-model PRECISION=fp32    # or: mltag-train export --run RUN --output DIR
    python benchmarks/int8_calibration.py --artifact models/default \
        [--data .cache/datasets/openclipart-ml] [--variants 0,1,5]

Prints validation mAP (fp32 and each int8 variant, with the drop) and ONNX Runtime speed at
batch 8 (median of interleaved rounds, the service's session options). The bundled
`models/default` is already int8: give it the float export of the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mltag_artifact import load_artifact
from mltag_artifact.runner import session_options
from model_training.export.quantize import quantize_static_qdq
from model_training.export.scoring import runner_scores, sample_batches
from model_training.metrics import evaluate_scores

ROOT = Path(__file__).resolve().parents[1]
LAST_STAGES = ("/blocks.5/", "/blocks.6/", "/conv_head/")  # what the partial regime trained
VARIANTS = [  # name, method, calibration images, nodes kept float
    ("minmax, 128 images", "minmax", 128, ()),
    ("minmax, 512 images", "minmax", 512, ()),
    ("percentile, 128 images", "percentile", 128, ()),
    ("entropy, 128 images", "entropy", 128, ()),
    ("minmax, 128, trained stages float", "minmax", 128, LAST_STAGES),
    ("minmax, 512, depthwise convs float", "minmax", 512, ("/conv_dw/",)),
    ("minmax, 512, stages 0-1 float", "minmax", 512, ("/blocks.0/", "/blocks.1/")),
    ("minmax, 512, pointwise-linear (projection) convs float", "minmax", 512, ("/conv_pwl/",)),
    ("minmax, 512, stage 0 float", "minmax", 512, ("/blocks.0/",)),
    ("minmax, 128, stage 0 float", "minmax", 128, ("/blocks.0/",)),
    ("minmax, 512, stage 1 float", "minmax", 512, ("/blocks.1/",)),
]


class Session:
    """An ONNX model with the service's session options, as `runner_scores` calls it."""

    def __init__(self, path: Path, input_name: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(path), session_options(), providers=["CPUExecutionProvider"]
        )
        self.input_name = input_name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: batch})[0], np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--artifact", type=Path, required=True, help="a float (fp32) artifact")
    ap.add_argument("--data", type=Path, default=ROOT / ".cache" / "datasets" / "openclipart-ml")
    ap.add_argument("--variants", default="", help="comma-separated indexes (default: all)")
    args = ap.parse_args()
    art = load_artifact(args.artifact)
    prep, labels = art.manifest.preprocessing, art.manifest.labels
    index = {name: i for i, name in enumerate(labels)}
    val_rows = [json.loads(x) for x in (args.data / "val.jsonl").read_text().splitlines() if x]
    val_paths = [args.data / r["image"] for r in val_rows]
    targets = np.zeros((len(val_rows), len(labels)), np.float32)
    for i, r in enumerate(val_rows):
        targets[i, [index[name] for name in r["labels"]]] = 1
    train = [
        json.loads(x)["image"] for x in (args.data / "train.jsonl").read_text().splitlines() if x
    ]
    draw = [args.data / p for p in random.Random(0).sample(train, 512)]
    fp32 = Session(art.onnx_path, art.manifest.onnx.input_name)
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else VARIANTS
    runners: list[Session] = [fp32]
    rows = [("fp32", 0.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, n, keep in chosen:
            out = Path(tmp) / f"{len(runners)}.onnx"
            t0 = time.perf_counter()
            batches = sample_batches(draw[:n], prep, 16)
            quantize_static_qdq(
                art.onnx_path,
                out,
                batches,
                art.manifest.onnx.input_name,
                method=method,
                keep_float=keep,
            )
            rows.append((name, time.perf_counter() - t0))
            runners.append(Session(out, art.manifest.onnx.input_name))
        scores = runner_scores(runners, val_paths, prep)  # type: ignore[arg-type]  # duck-typed
        maps = [evaluate_scores(s, targets).mAP for s in scores]
        batch = next(sample_batches(val_paths[:8], prep, 8))
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(7):
            for t, r in zip(times, runners, strict=True):
                t0 = time.perf_counter()
                r.run(batch)
                t.append(time.perf_counter() - t0)
    speed = [statistics.median(t) for t in times]
    print(f"# {args.artifact}: validation {len(val_paths)} images; ORT batch 8, 2 threads")
    print("| variant | quantise s | val mAP | drop | ms / batch of 8 | speed-up |")
    print("|---|---|---|---|---|---|")
    for (name, secs), m, sp in zip(rows, maps, speed, strict=True):
        print(f"| {name} | {secs:.0f} | {m:.2f} | {maps[0] - m:.2f} | {sp * 1000:.1f} | "
              f"{speed[0] / sp:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
