"""The artifact contract: round-trip, and every malformed manifest rejected clearly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mltag_artifact import (
    Artifact,
    ArtifactError,
    Manifest,
    load_artifact,
    manifest_json_schema,
    parse_manifest,
)

REPO = Path(__file__).resolve().parents[2]


def _raw(artifact: Artifact) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((artifact.directory / "manifest.json").read_text())
    return raw


def test_round_trip(demo_artifact: Artifact) -> None:
    loaded = load_artifact(demo_artifact.directory)
    assert loaded.manifest == demo_artifact.manifest
    again = Manifest.model_validate_json(loaded.manifest.model_dump_json())
    assert again == loaded.manifest
    assert loaded.manifest.threshold_by_label["red"] == pytest.approx(0.5)
    assert (demo_artifact.directory / "MODEL_CARD.md").read_text().startswith("# ")


def test_committed_schema_is_current() -> None:
    committed = (REPO / "docs" / "manifest.schema.json").read_text()
    assert committed == manifest_json_schema(), "run `make schema` and commit the result"


def _mutate(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()

INVALID = [
    ("thresholds", [0.5, 0.5], "thresholds has 2 entries but labels has 6"),
    ("thresholds", [0.5, 0.5, 0.5, 0.5, 0.5, 1.5], "thresholds.5: Input should be less than"),
    ("thresholds", [-0.1, 0.5, 0.5, 0.5, 0.5, 0.5], "thresholds.0: Input should be greater"),
    ("default_threshold", 2, "default_threshold: Input should be less than or equal to 1"),
    ("schema_version", "9.0", "schema_version: unsupported schema version '9.0'"),
    ("onnx.sha256", "abc", "onnx.sha256: must be 64 lower-case hex characters"),
    ("onnx.file", "../model.onnx", "onnx.file: must be a file name inside the artifact"),
    ("labels", [], "labels: List should have at least 1 item"),
    ("labels", ["a", "a", "b", "c", "d", "e"], "labels: duplicate label 'a'"),
    ("labels", ["a", " b", "c", "d", "e", "f"], "labels: label 1 (' b') is empty or has"),
    ("name", _DELETE, "name: Field required"),
    ("preprocessing.height", 0, "preprocessing.height: Input should be greater than 0"),
    ("preprocessing.std", [0.5, 0, 0.5], "preprocessing.std: every std must be > 0"),
    ("preprocessing.layout", "HWC", "preprocessing.layout: Input should be 'NCHW' or 'NHWC'"),
    ("preprocessing.normalize_in_graph", False, "requires normalize_in_graph=true"),
    ("output.semantics", "logits", "output.semantics: Input should be 'probabilities'"),
    ("colour", "red", "colour: unknown field"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_rejected_with_field_and_reason(
    demo_artifact: Artifact, path: str, value: Any, message: str
) -> None:
    raw = _mutate(_raw(demo_artifact), path, value)
    with pytest.raises(ArtifactError) as err:
        parse_manifest(json.dumps(raw), "manifest.json")
    assert message in str(err.value)
    assert str(err.value).startswith("manifest.json: ")


def test_not_json_and_not_object() -> None:
    with pytest.raises(ArtifactError, match="not valid JSON"):
        parse_manifest(b"{nope", "m.json")
    with pytest.raises(ArtifactError, match="must be a JSON object, got list"):
        parse_manifest(b"[]", "m.json")


@pytest.fixture
def artifact_copy(demo_artifact: Artifact, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(demo_artifact.directory, target)
    return target


def test_changed_onnx_bytes_rejected(artifact_copy: Path) -> None:
    onnx_file = artifact_copy / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"onnx.sha256: model.onnx has sha256 [0-9a-f]{64}"):
        load_artifact(artifact_copy)


def test_missing_files_rejected(artifact_copy: Path, tmp_path: Path) -> None:
    (artifact_copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="onnx.file: 'model.onnx' not found"):
        load_artifact(artifact_copy)
    (artifact_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        load_artifact(artifact_copy)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_schema_1_0_manifests_still_load(demo_artifact: Artifact) -> None:
    raw = _raw(demo_artifact)
    raw["schema_version"] = "1.0"
    raw.pop("label_info", None)
    manifest = parse_manifest(json.dumps(raw))
    assert manifest.schema_version == "1.0" and manifest.label_info is None


def _info(parents: dict[str, list[str]], labels: list[str]) -> list[dict[str, Any]]:
    return [{"parents": parents.get(label, []), "category": "colours"} for label in labels]


def test_label_hierarchy_round_trip_and_checks(demo_artifact: Artifact) -> None:
    raw = _raw(demo_artifact)
    labels = raw["labels"]  # red, green, blue, yellow, bright, dark
    raw["label_info"] = _info({"yellow": ["bright"], "red": ["bright"]}, labels)
    manifest = parse_manifest(json.dumps(raw))
    assert manifest.label_info is not None
    assert manifest.label_info[labels.index("yellow")].parents == ["bright"]
    assert manifest.label_info[0].category == "colours"
    bad = [
        ({"red": ["purple"]}, "parents ['purple'] are not labels of the model"),
        ({"red": ["red"]}, "label 'red' is its own parent"),
    ]
    for parents, message in bad:
        raw["label_info"] = _info(parents, labels)
        with pytest.raises(ArtifactError, match=re.escape(message)):
            parse_manifest(json.dumps(raw))
    raw["label_info"] = _info({}, labels)[:2]
    with pytest.raises(ArtifactError, match="label_info has 2 entries but labels has 6"):
        parse_manifest(json.dumps(raw))


def test_explain_graph_is_checked_like_the_model(artifact_copy: Path) -> None:
    """Schema 1.2's optional explain graph: hashed, present, a file of its own."""
    explain = artifact_copy / "explain.onnx"
    data = bytearray(explain.read_bytes())
    data[-1] ^= 0xFF
    explain.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"onnx.explain.sha256: explain.onnx has sha256"):
        load_artifact(artifact_copy)
    explain.unlink()
    with pytest.raises(ArtifactError, match="onnx.explain.file: 'explain.onnx' not found"):
        load_artifact(artifact_copy)
    raw = json.loads((artifact_copy / "manifest.json").read_text())
    raw["onnx"]["explain"]["file"] = "model.onnx"
    with pytest.raises(ArtifactError, match="a graph of its own"):
        parse_manifest(json.dumps(raw))


def test_artifacts_without_an_explain_graph_still_load(demo_artifact: Artifact) -> None:
    raw = _raw(demo_artifact)
    raw["schema_version"] = "1.1"
    raw["onnx"].pop("explain")
    manifest = parse_manifest(json.dumps(raw))
    assert manifest.onnx.explain is None
