"""The ONNX Runtime session of an artifact: session options, provider choice and fallback,
checks of the graph's inputs and outputs against the manifest, warm-up, run.

Used by the service, the exporter's verification and evaluation, and the benchmarks, so every
measurement runs the model exactly as it is served. Needs numpy + onnxruntime (the `runtime`
extra of this package).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

# Before the first import of ONNX Runtime: otherwise it looks up Microsoft's telemetry host
# and prints a non-JSON warning to stderr. A user's explicit setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnxruntime as ort

from .artifact import Artifact
from .manifest import Manifest

log = logging.getLogger("mltag.runner")

_GPU_PROVIDERS = {
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


class ModelLoadError(Exception):
    """The model cannot be served as configured (message says why)."""


def _cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """CPUs allowed by a cgroup v2 quota (a container's CPU limit), or None if unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cores() -> int:
    """Cores this process may really use: affinity, capped by a container CPU quota, so
    thread pools are not oversized under Kubernetes/compose CPU limits."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def choose_providers(requested: str, require_gpu: bool, available: list[str]) -> list[str]:
    """Map the `provider` setting onto an ORT provider list, or refuse clearly."""
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if requested in _GPU_PROVIDERS:
        wanted = _GPU_PROVIDERS[requested][0]
        if wanted not in available:
            raise ModelLoadError(
                f"provider {requested!r} requested but ONNX Runtime offers only {available}; "
                "install the `gpu` extra (onnxruntime-gpu) on a machine with CUDA"
            )
        return [p for p in _GPU_PROVIDERS[requested] if p in available]
    # auto: the best GPU provider present, else CPU
    for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if name in available:
            return [p for p in _GPU_PROVIDERS["tensorrt"] if p in available]
    if require_gpu:
        raise ModelLoadError(
            f"require_gpu is set but ONNX Runtime offers no GPU provider (only {available})"
        )
    log.warning("no GPU execution provider available; running on CPU")
    return ["CPUExecutionProvider"]


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """The options every mltag session uses: full graph optimisation, `intra_op_threads`
    (0 = one per usable core), one inter-op thread, no busy-wait spinning (a spinning
    worker holds a core that image decoding needs)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = intra_op_threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class ModelRunner:
    """One ORT session (and one for the explain graph, when the artifact has one and
    `explain` is true); `run` and `run_explain` are called from one thread at a time (the
    batcher's)."""

    def __init__(
        self,
        artifact: Artifact,
        provider: str = "auto",
        require_gpu: bool = False,
        intra_op_threads: int = 0,
        explain: bool = True,
    ) -> None:
        m = artifact.manifest
        self.manifest = m
        opts = session_options(intra_op_threads)
        self.session_threads = opts.intra_op_num_threads
        providers = choose_providers(provider, require_gpu, ort.get_available_providers())
        self.session = _open_session(artifact.onnx_path, opts, providers)
        self.provider = self.session.get_providers()[0]
        if require_gpu and self.provider == "CPUExecutionProvider":
            raise ModelLoadError("require_gpu is set but the session fell back to CPU")
        self._check_io()
        p = m.preprocessing
        shape = (p.height, p.width, 3) if p.layout == "NHWC" else (3, p.height, p.width)
        self.sample_shape: tuple[int, int, int] = shape
        self.dtype = np.dtype(p.input_dtype)
        self.input_name = m.onnx.input_name
        self.output_names = [m.onnx.output_name]
        self.explainer: Explainer | None = None
        if explain and artifact.explain_path is not None and m.onnx.explain is not None:
            session = _open_session(artifact.explain_path, opts, providers)
            self.explainer = Explainer(session, m)

    def _check_io(self) -> None:
        m = self.manifest
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if m.onnx.input_name not in inputs:
            raise ModelLoadError(
                f"manifest onnx.input_name {m.onnx.input_name!r} is not a model input "
                f"(model inputs: {sorted(inputs)})"
            )
        if len(inputs) != 1:
            raise ModelLoadError(f"the model must have exactly one input, has {sorted(inputs)}")
        if m.onnx.output_name not in outputs:
            raise ModelLoadError(
                f"manifest onnx.output_name {m.onnx.output_name!r} is not a model output "
                f"(model outputs: {sorted(outputs)})"
            )
        inp = inputs[m.onnx.input_name]
        want = _ORT_TYPES[m.preprocessing.input_dtype]
        if inp.type != want:
            raise ModelLoadError(
                f"model input is {inp.type} but manifest preprocessing.input_dtype says {want}"
            )
        p = m.preprocessing
        sample = (p.height, p.width, 3) if p.layout == "NHWC" else (3, p.height, p.width)
        dims = list(inp.shape)
        if len(dims) != 4 or any(
            isinstance(got, int) and got != want for got, want in zip(dims[1:], sample, strict=True)
        ):
            raise ModelLoadError(
                f"model input {m.onnx.input_name!r} has shape {dims} but the manifest's "
                f"preprocessing ({p.layout}, {p.width}x{p.height}) gives samples of {list(sample)}"
            )
        n_out = outputs[m.onnx.output_name].shape[-1]
        if isinstance(n_out, int) and n_out != len(m.labels):
            raise ModelLoadError(
                f"model outputs {n_out} scores but the manifest lists {len(m.labels)} labels"
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(B, *sample_shape) -> (B, C) float32 probabilities."""
        out = self.session.run(self.output_names, {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def run_explain(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, *sample_shape) -> probabilities (B, C) and raw heatmaps (B, C, h, w), from the
        explain graph (one run); ModelLoadError-free: check `explainer` first."""
        if self.explainer is None:
            raise RuntimeError("this artifact has no explain graph")
        return self.explainer.run(batch)

    def warm_up(self, runs: int, max_batch_size: int) -> None:
        """Run the sizes we will see, and check the output honours the contract."""
        for size in sorted({1, max_batch_size}):
            batch = np.zeros((size, *self.sample_shape), dtype=self.dtype)
            for _ in range(max(1, runs)):
                try:
                    probs = self.run(batch)
                except Exception as e:  # ORT's own errors: the graph and manifest disagree
                    raise ModelLoadError(f"the model fails on a batch of {size}: {e}") from e
            if probs.shape != (size, len(self.manifest.labels)):
                raise ModelLoadError(
                    f"model returned shape {probs.shape} for a batch of {size}; expected "
                    f"({size}, {len(self.manifest.labels)})"
                )
            if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
                raise ModelLoadError(
                    "model output is not probabilities in [0, 1] "
                    f"(range {probs.min():.3g}..{probs.max():.3g}); the manifest promises "
                    "output.semantics = probabilities"
                )
        if self.explainer is not None:
            self.explainer.warm_up(self, max(1, runs))


def _open_session(
    path: Path, opts: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {e}") from e


# The explain graph's probabilities may differ from the served graph's by float rounding only
# (the same weights, fused differently): a larger gap means the two files do not match.
EXPLAIN_AGREEMENT = 1e-4


class Explainer:
    """The explain graph's session (manifest `onnx.explain`), checked against the manifest:
    the model's input, its probabilities and a (B, C, height, width) float map."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest) -> None:
        assert manifest.onnx.explain is not None
        self.session = session
        self.spec = manifest.onnx.explain
        self.num_labels = len(manifest.labels)
        self.input_name = manifest.onnx.input_name
        self.output_names = [manifest.onnx.output_name, self.spec.output_name]
        self._check_io(manifest)

    def _check_io(self, m: Manifest) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = {o.name: o for o in self.session.get_outputs()}
        where = f"explain graph {self.spec.file}"
        if inputs != [m.onnx.input_name]:
            raise ModelLoadError(f"{where} takes {inputs}; expected [{m.onnx.input_name!r}]")
        missing = [name for name in self.output_names if name not in outputs]
        if missing:
            raise ModelLoadError(f"{where} lacks outputs {missing} (has {sorted(outputs)})")
        dims = list(outputs[self.spec.output_name].shape)
        want = [self.num_labels, self.spec.height, self.spec.width]
        if len(dims) != 4 or any(
            isinstance(got, int) and got != w for got, w in zip(dims[1:], want, strict=True)
        ):
            raise ModelLoadError(
                f"{where}: {self.spec.output_name!r} has shape {dims}; the manifest says "
                f"[batch, {', '.join(map(str, want))}]"
            )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, maps = self.session.run(self.output_names, {self.input_name: batch})
        return np.asarray(probs, dtype=np.float32), np.asarray(maps, dtype=np.float32)

    def warm_up(self, runner: ModelRunner, runs: int) -> None:
        """Shapes, finite values, and probabilities that agree with the served graph's."""
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 256, (2, *runner.sample_shape)).astype(runner.dtype)
        for _ in range(runs):
            try:
                probs, maps = self.run(batch)
            except Exception as e:
                raise ModelLoadError(f"the explain graph fails on a batch of 2: {e}") from e
        want = (2, self.num_labels, self.spec.height, self.spec.width)
        if maps.shape != want or not np.all(np.isfinite(maps)):
            raise ModelLoadError(
                f"the explain graph returned heatmaps of shape {maps.shape} (finite: "
                f"{bool(np.all(np.isfinite(maps)))}); expected finite values of shape {want}"
            )
        gap = float(np.max(np.abs(probs - runner.run(batch))))
        if not gap <= EXPLAIN_AGREEMENT:
            raise ModelLoadError(
                f"the explain graph's probabilities differ from {runner.manifest.onnx.file}'s "
                f"by {gap:.3g} (> {EXPLAIN_AGREEMENT:g}): the two files are not the same model"
            )
