"""The mltag artifact contract: a directory with `model.onnx`, `manifest.json`, `MODEL_CARD.md`,
and everything both the training and the serving side need to use one.

- `manifest`, `artifact` (imported here; pydantic and the stdlib only): the manifest schema,
  reading, verifying and writing artifact directories.
- `preprocess` (numpy, Pillow): image bytes -> model input, as the manifest describes.
- `runner` (onnxruntime, the `runtime` extra): the ONNX Runtime session and its checks.
- `tagger`: a loaded artifact with its runner, label index and thresholds; probabilities -> tags.
- `heatmap` (numpy, Pillow): an explain graph's raw maps -> [0, 1] per label, and overlays.

The exporter writes artifacts; the service, batch tagging and evaluation load them. Neither
side imports the other.
"""

from .artifact import (
    MANIFEST_FILE,
    Artifact,
    ArtifactError,
    load_artifact,
    manifest_json_schema,
    parse_manifest,
    sha256_file,
    write_artifact,
)
from .manifest import (
    SCHEMA_VERSION,
    Architecture,
    Evaluation,
    ExplainGraph,
    LabelInfo,
    Manifest,
    OnnxModel,
    Output,
    Preprocessing,
)

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "Architecture",
    "Artifact",
    "ArtifactError",
    "Evaluation",
    "ExplainGraph",
    "LabelInfo",
    "Manifest",
    "OnnxModel",
    "Output",
    "Preprocessing",
    "load_artifact",
    "manifest_json_schema",
    "parse_manifest",
    "sha256_file",
    "write_artifact",
]
