"""The mltag artifact contract: a directory with `model.onnx`, `manifest.json`, `MODEL_CARD.md`.

Shared by the exporter (writes) and the service (validates). Depends on pydantic only.
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
