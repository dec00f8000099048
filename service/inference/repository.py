"""A model repository on disk, in Triton's layout: `DIR/<model>/<version>/`, each version a
positive integer folder holding an artifact (model.onnx + manifest.json). The version served
is the highest one, or the one pinned for that model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mltag_artifact import MANIFEST_FILE


@dataclass(frozen=True)
class VersionDir:
    model: str
    version: int
    path: Path

    def signature(self) -> tuple[int, ...]:
        """Changes when the folder's files change: a version that failed is tried again only
        once it is different (say, finished copying)."""
        stats = []
        for child in sorted(self.path.iterdir()):
            try:
                st = child.stat()
            except OSError:
                continue
            stats += [st.st_mtime_ns, st.st_size]
        return tuple(stats)


def scan(root: Path) -> dict[str, list[VersionDir]]:
    """Every model folder and its version folders (ascending). Hidden folders, files, and
    folders whose name is not a positive integer are ignored, as Triton does."""
    models: dict[str, list[VersionDir]] = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        versions = [
            VersionDir(model_dir.name, int(child.name), child)
            for child in model_dir.iterdir()
            if child.is_dir() and child.name.isdigit() and int(child.name) > 0
        ]
        models[model_dir.name] = sorted(versions, key=lambda v: v.version)
    return models


def choose(versions: list[VersionDir], pinned: int | None) -> VersionDir | None:
    """The version to serve: the pinned one when set (None if it is missing), else the
    highest that holds a manifest (a folder still being created is skipped)."""
    if pinned is not None:
        return next((v for v in versions if v.version == pinned), None)
    complete = [v for v in versions if (v.path / MANIFEST_FILE).is_file()]
    return complete[-1] if complete else None
