"""Reading, verifying and writing artifact directories (`model.onnx` + `manifest.json`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .manifest import Manifest

MANIFEST_FILE = "manifest.json"


class ArtifactError(Exception):
    """An artifact is missing, malformed or does not match its manifest."""


@dataclass(frozen=True)
class Artifact:
    directory: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.manifest.onnx.file

    @property
    def explain_path(self) -> Path | None:
        """The explain graph (schema 1.2), or None when the artifact has none."""
        explain = self.manifest.onnx.explain
        return self.directory / explain.file if explain is not None else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(manifest)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (typo, or a newer schema?)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_manifest(data: str | bytes, source: str = MANIFEST_FILE) -> Manifest:
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{source}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{source}: must be a JSON object, got {type(raw).__name__}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise ArtifactError(format_validation_error(e, source)) from None


def load_artifact(directory: str | os.PathLike[str], verify_hash: bool = True) -> Artifact:
    """Load and validate an artifact; raise ArtifactError naming each problem."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {str(root)!r} does not exist")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path}: missing (an artifact needs {MANIFEST_FILE})")
    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    artifact = Artifact(root, manifest)
    _check_file(manifest_path, "onnx", root, manifest.onnx.file, manifest.onnx.sha256,
                verify_hash)  # fmt: skip
    explain = manifest.onnx.explain
    if explain is not None:
        _check_file(manifest_path, "onnx.explain", root, explain.file, explain.sha256,
                    verify_hash)  # fmt: skip
    return artifact


def _check_file(
    manifest_path: Path, field: str, root: Path, name: str, sha256: str, verify_hash: bool
) -> None:
    path = root / name
    if not path.is_file():
        raise ArtifactError(f"{manifest_path}: {field}.file: {name!r} not found in {root}")
    if verify_hash:
        actual = sha256_file(path)
        if actual != sha256:
            raise ArtifactError(
                f"{manifest_path}: {field}.sha256: {name} has sha256 {actual}, "
                f"manifest says {sha256} (file changed or corrupted)"
            )


def write_artifact(
    directory: str | os.PathLike[str],
    manifest: Manifest,
    onnx_file: str | os.PathLike[str],
    model_card: str | None = None,
    explain_file: str | os.PathLike[str] | None = None,
) -> Artifact:
    """Copy the ONNX file (and the explain graph the manifest declares) in, fill in their
    sha256, and write the manifest (and model card).

    The manifest's `onnx.sha256` (and `onnx.explain.sha256`) are replaced by the hashes of
    the copied files, so callers may pass any placeholder.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    onnx_spec = manifest.onnx.model_copy(
        update={"sha256": _copy_in(onnx_file, root / manifest.onnx.file)}
    )
    explain = manifest.onnx.explain
    if (explain is None) != (explain_file is None):
        raise ArtifactError("an explain graph needs both onnx.explain and explain_file")
    if explain is not None and explain_file is not None:
        digest = _copy_in(explain_file, root / explain.file)
        onnx_spec = onnx_spec.model_copy(
            update={"explain": explain.model_copy(update={"sha256": digest})}
        )
    card_name = manifest.model_card if model_card is not None else None
    final = manifest.model_copy(update={"onnx": onnx_spec, "model_card": card_name})
    # Round-trip through validation so a bad manifest can never be written.
    final = Manifest.model_validate(final.model_dump())
    if model_card is not None and card_name:
        (root / card_name).write_text(model_card, encoding="utf-8")
    (root / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return Artifact(root, final)


def _copy_in(source: str | os.PathLike[str], target: Path) -> str:
    """Copy `source` to `target` (unless it is already there); the copy's sha256."""
    if Path(source).resolve() != target.resolve():
        shutil.copyfile(source, target)
    return sha256_file(target)


def manifest_json_schema() -> str:
    """The JSON schema committed under docs/ (regenerated by `make schema`)."""
    return json.dumps(Manifest.model_json_schema(), indent=2, sort_keys=True) + "\n"
