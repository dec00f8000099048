"""The data set's label hierarchy, as the exporter reads it for the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_training.config import DataConfig
from model_training.data import DataError
from model_training.data.hierarchy import dataset_hierarchy, label_info_for, read_hierarchy


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_hierarchy_beside_the_training_file_is_found(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.jsonl", {})
    _write(tmp_path / "hierarchy.json", {"labels": {"cat": {"parents": ["animal", "pet"]}}})
    found = dataset_hierarchy(DataConfig(format="jsonl", train=str(train)))
    info = label_info_for(found, ["animal", "cat"])
    assert info is not None
    # `pet` is not a label of this model: dropped, not an invalid manifest
    assert [i.parents for i in info] == [[], ["animal"]]


def test_explicit_file_wins_and_nothing_known_gives_none(tmp_path: Path) -> None:
    own = _write(tmp_path / "mine.json", {"labels": {"a": {"aliases": ["alpha"]}}})
    data = DataConfig(format="csv", train=str(tmp_path / "t.csv"), hierarchy=str(own))
    info = label_info_for(dataset_hierarchy(data), ["a", "b"])
    assert info is not None and info[0].aliases == ["alpha"] and info[1].aliases == []
    assert label_info_for(dataset_hierarchy(DataConfig(format="csv")), ["a"]) is None
    assert label_info_for({}, ["a"]) is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "an object under 'labels'"),
        ({"labels": {"a": {"parents": "b"}}}, "label 'a'"),
        ({"labels": {"a": {"colour": "red"}}}, "label 'a'"),
    ],
)
def test_bad_hierarchy_files_are_named(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_hierarchy(_write(tmp_path / "h.json", doc))
    with pytest.raises(DataError, match="not found"):
        read_hierarchy(tmp_path / "missing.json")
