"""What heatmaps cost (issue 19): does `/tag` without explain cost the same as before, and
would ONNX Runtime skip a second output nobody fetches?

    .venv/bin/python benchmarks/explain.py [--rounds 5] [--requests 100] [--run RUN_DIR]

Without --run it trains the default model's architecture for one epoch on 64 clip-art
canvases (EfficientNet-Lite0 + ML-Decoder, embed 256, 128 px, random init: speed does not
depend on the weights) and exports it twice: with its explain graph and with --no-explain.
Then, in interleaved rounds so machine drift hits all alike:
  * ORT pruning probe: a graph with a cheap and a costly output, fetching one or both;
  * ORT: the explain graph fetching only `probabilities` vs both outputs, vs model.onnx
    (the question: does ONNX Runtime prune nodes whose outputs are not fetched?);
  * service: median latency of POST /tag (one 640x480 JPEG, in-process app) on the artifact
    with the explain graph vs the one without, and with explain=true for reference.
Results: benchmarks/RESULTS.md#per-tag-heatmaps-issue-19.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_standin(work: Path) -> Path:
    import torch

    from model_training import plots
    from model_training.config import load_config
    from model_training.trainer import fit
    from tests.explain.pointing import make_scenes

    train, test = make_scenes(work, 64, 0, "train"), make_scenes(work, 16, 1, "test")
    cfg = load_config(REPO / "configs/default_model.yaml", [
        f"data.train={train}", f"data.test={test}", "data.val=null", "data.num_workers=0",
        "data.val_fraction=0.25", "data.augment.randaugment=false", "data.augment.cutout=0",
        "model.pretrained=false", "train.epochs=1", "train.batch_size=16",
        "train.device=cpu", "train.progress=false", "export.name=explain-bench",
    ])  # fmt: skip
    plots.plot_pr_curves = lambda *a, **k: None
    plots.plot_curves = lambda *a, **k: None
    torch.manual_seed(0)
    fit(cfg, work / "run")
    return work / "run"


def timed(fn: object, n: int) -> float:
    """Median seconds of n calls."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prune_probe(path: Path) -> None:
    """A graph with a cheap output `a` (a sum) and a costly one `b` (20 matmuls of 512 x 512
    on 256 rows): if ONNX Runtime skipped nodes nobody fetches, fetching only `a` would be
    nearly free."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32) / 23.0
    nodes = [helper.make_node("ReduceSum", ["x"], ["a"], keepdims=0)]
    prev = "x"
    for i in range(20):
        nodes += [helper.make_node("MatMul", [prev, "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}" if i < 19 else "b"])]  # fmt: skip
        prev = f"t{i}"
    graph = helper.make_graph(
        nodes, "prune_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 512])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [256, 512])],
        initializer=[numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def probe_round(path: Path, n: int) -> dict[str, float]:
    import onnxruntime as ort

    from mltag_artifact.runner import session_options

    session = ort.InferenceSession(str(path), session_options(0), ["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)}
    session.run(["a", "b"], feed)
    return {
        "probe: fetch the cheap output only": timed(lambda: session.run(["a"], feed), n),
        "probe: fetch both outputs": timed(lambda: session.run(["a", "b"], feed), n),
    }


def ort_round(explained: Path, n: int) -> dict[str, float]:
    import onnxruntime as ort

    from mltag_artifact import load_artifact
    from mltag_artifact.runner import session_options

    art = load_artifact(explained)
    p = art.manifest.preprocessing
    x = np.random.default_rng(0).integers(0, 256, (1, p.height, p.width, 3)).astype(np.uint8)
    opts = session_options(0)
    model = ort.InferenceSession(str(art.onnx_path), opts, providers=["CPUExecutionProvider"])
    assert art.explain_path is not None
    both = ort.InferenceSession(str(art.explain_path), opts, providers=["CPUExecutionProvider"])
    feed = {"image": x}
    outputs = ["probabilities", "heatmaps"]
    return {
        "model.onnx": timed(lambda: model.run(["probabilities"], feed), n),
        "explain.onnx, probabilities only": timed(lambda: both.run(["probabilities"], feed), n),
        "explain.onnx, both outputs": timed(lambda: both.run(outputs, feed), n),
    }  # fmt: skip


def service_round(artifacts: dict[str, Path], image: bytes, n: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    out = {}
    cases = [("no explain graph: /tag", "plain", ""), ("explain graph: /tag", "explained", ""),
             ("explain graph: /tag?explain=true", "explained", "?explain=true")]  # fmt: skip
    for name, which, query in cases:
        with TestClient(create_app(Settings(artifact_dir=artifacts[which]))) as client:

            def call(query: str = query, client: TestClient = client) -> None:
                r = client.post("/tag" + query, content=image,
                                headers={"content-type": "image/jpeg"})  # fmt: skip
                assert r.status_code == 200, r.text

            for _ in range(5):
                call()
            out[name] = timed(call, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a training run to export (default: train one)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    from model_training.export import export_run

    work = Path(tempfile.mkdtemp(prefix="explain-bench-"))
    try:
        run = args.run or train_standin(work)
        artifacts = {"explained": work / "explained", "plain": work / "plain"}
        export_run(run, artifacts["explained"], verify_images=4)
        export_run(run, artifacts["plain"], verify_images=4, explain=False)
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), (90, 140, 200)).save(buf, "JPEG", quality=90)
        prune_probe(work / "probe.onnx")
        rows: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for table in (probe_round(work / "probe.onnx", 20),
                          ort_round(artifacts["explained"], args.requests),
                          service_round(artifacts, buf.getvalue(), args.requests)):  # fmt: skip
                for name, seconds in table.items():
                    rows.setdefault(name, []).append(seconds)
        print(f"| case | median ms (per round, {args.rounds} rounds) |\n|---|---|")
        for name, values in rows.items():
            each = ", ".join(f"{1000 * v:.2f}" for v in values)
            print(f"| {name} | {1000 * statistics.median(values):.2f} ({each}) |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
