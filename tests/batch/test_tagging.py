"""The tagging actor's work, in-process (no Ray): every row holds exactly what `POST /tag`
returns for that file, under each kind of option, and bad inputs become error rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mltag_artifact import ArtifactError, load_artifact
from mltag_batch import sinks
from mltag_batch.tagging import (
    ArtifactFiles,
    Failure,
    ImageTagger,
    TagOptions,
    WorkerOptions,
    load_input,
)

from .conftest import DEFAULT_MODEL, MAX_PIXELS, ServiceTag, collection_files

EXPECTED_ERRORS = {
    "truncated.png": "invalid_image",
    "garbage.jpg": "invalid_image",
    "empty.png": "empty_image",
    "icon.png": "unsupported_format",
    "oversized.png": "image_too_large",
}


def make_tagger(output: Path, options: TagOptions, batch_size: int = 4) -> ImageTagger:
    sinks.claim(str(output), {"test": True}, "run1")
    writer = sinks.ShardWriter(str(output), "jsonl", "run1", options.all_scores)
    files = ArtifactFiles.read(load_artifact(DEFAULT_MODEL))
    return ImageTagger(files, options, WorkerOptions(batch_size, threads=2, provider="cpu"), writer)


def shard(ids: list[str], paths: list[str]) -> dict[str, np.ndarray]:
    return {
        "seq": np.arange(len(ids)),
        "id": np.array(ids, dtype=object),
        "path": np.array(paths, dtype=object),
    }


def rows_of(output: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(output.glob("part-*.jsonl")):
        rows.extend(json.loads(line) for line in f.read_text().splitlines())
    return rows


OPTION_SETS = [
    pytest.param({"all_scores": True}, {"all_scores": "true"}, id="calibrated+all_scores"),
    pytest.param({"min_score": 0.2, "top_k": 3}, {"min_score": "0.2", "top_k": "3"}, id="min_k"),
    pytest.param(
        {"thresholds": {"map": 0.01, "food": 0.999}, "min_score": 0.6},
        {"thresholds": '{"map": 0.01, "food": 0.999}', "min_score": "0.6"},
        id="overrides",
    ),
]


@pytest.mark.parametrize(("kwargs", "query"), OPTION_SETS)
def test_rows_equal_the_service(
    collection: Path,
    service_tag: ServiceTag,
    tmp_path: Path,
    kwargs: dict[str, Any],
    query: dict[str, str],
) -> None:
    names = list(collection_files())
    options = TagOptions(max_pixels=MAX_PIXELS, **kwargs)
    tagger = make_tagger(tmp_path / "out", options)
    stats = tagger(shard(names, [str(collection / n) for n in names]))
    rows = rows_of(tmp_path / "out")
    assert [r["id"] for r in rows] == names  # input order
    assert stats["rows"] == [len(names)] and stats["errors"] == [len(EXPECTED_ERRORS)]
    tagged = 0
    for row in rows:
        expected = service_tag(row["id"], query)
        assert row["error"] == expected["error"], row["id"]
        assert row["tags"] == expected["tags"], row["id"]  # same float32 scores, exactly
        assert row.get("scores") == expected.get("scores"), row["id"]
        manifest = tagger.tagger.manifest
        assert row["model"] == {
            "name": manifest.name,
            "version": manifest.version,
            "sha256": manifest.onnx.sha256,
        }
        tagged += bool(row["tags"])
    assert tagged >= 3  # the clip art really gets tags: the comparison is not vacuous
    codes = {r["id"]: r["error"]["code"] for r in rows if r["error"]}
    assert codes == EXPECTED_ERRORS


def test_the_model_runs_full_batches_while_bad_files_are_skipped(
    collection: Path, tmp_path: Path
) -> None:
    names = list(collection_files())
    tagger = make_tagger(tmp_path / "out", TagOptions(max_pixels=MAX_PIXELS), batch_size=4)
    sizes: list[int] = []
    run = tagger.tagger.run
    tagger.tagger.run = lambda batch: sizes.append(len(batch)) or run(batch)  # type: ignore[method-assign]
    tagger(shard(names, [str(collection / n) for n in names]))
    good = len(names) - len(EXPECTED_ERRORS)
    assert sizes == [4] * (good // 4) + ([good % 4] if good % 4 else [])


def test_unreadable_files_become_error_rows(collection: Path, tmp_path: Path) -> None:
    prep = load_artifact(DEFAULT_MODEL).manifest.preprocessing
    options = TagOptions(max_bytes=1000)
    missing = load_input(str(tmp_path / "nope.png"), prep, options)
    assert isinstance(missing, Failure) and missing.code == "not_found"
    directory = load_input(str(collection / "sub"), prep, options)
    assert isinstance(directory, Failure) and directory.code == "read_error"
    big = load_input(str(collection / "photo.jpg"), prep, options)  # ~50 KB > 1000 bytes
    assert isinstance(big, Failure) and big.code == "file_too_large"
    ok = load_input(str(collection / "red.png"), prep, options)
    assert isinstance(ok, np.ndarray) and ok.shape == (prep.height, prep.width, 3)


def test_the_artifact_is_checked_again_after_its_trip(tmp_path: Path) -> None:
    files = ArtifactFiles.read(load_artifact(DEFAULT_MODEL))
    broken = ArtifactFiles({**files.files, "model.onnx": files.files["model.onnx"][:-1] + b"x"})
    (tmp_path / "a").mkdir()
    with pytest.raises(ArtifactError, match="sha256"):
        broken.unpack(tmp_path / "a")
