"""Listing SRC: directories, globs, one image, manifests (JSONL, CSV, Parquet), filesystem
URIs; ids that stay the same from one run to the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltag_batch.sources import SourceError, glob_regex, list_inputs

from .conftest import write_manifest


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("a.png", "B.JPG", "c.txt", "sub/d.webp", "sub/deep/e.tiff", "sub/deep/f.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_a_directory_is_listed_recursively_by_image_extension(tree: Path) -> None:
    inputs = list_inputs(str(tree))
    assert inputs.ids == ["B.JPG", "a.png", "sub/d.webp", "sub/deep/e.tiff", "sub/deep/f.gif"]
    assert inputs.paths == [str(tree / i) for i in inputs.ids]  # absolute
    assert inputs.kind == "directory"


def test_relative_directories_give_the_same_ids(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    assert list_inputs(tree.name).ids == list_inputs(str(tree)).ids
    assert list_inputs(tree.name).paths == list_inputs(str(tree)).paths


@pytest.mark.parametrize(
    ("pattern", "ids"),  # ids are relative to the pattern's fixed leading directory
    [
        ("*.png", ["a.png"]),
        ("**/*.gif", ["sub/deep/f.gif"]),
        ("sub/*", ["d.webp"]),
        ("sub/**", ["d.webp", "deep/e.tiff", "deep/f.gif"]),
        ("**/[de].*", ["sub/d.webp", "sub/deep/e.tiff"]),
        ("s*/d*/*.gif", ["sub/deep/f.gif"]),
    ],
)
def test_globs(tree: Path, pattern: str, ids: list[str]) -> None:
    inputs = list_inputs(str(tree / pattern))
    assert inputs.ids == ids
    assert all(p.startswith(str(tree) + "/") for p in inputs.paths)
    assert inputs.kind == "glob"


def test_a_glob_that_matches_nothing(tree: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        list_inputs(str(tree / "*.txt"))
    with pytest.raises(SourceError, match="no images"):
        list_inputs(str(tree / "nope" / "*.png"))


def test_glob_translation() -> None:
    assert glob_regex("/a/*.png").match("/a/x.png")
    assert not glob_regex("/a/*.png").match("/a/b/x.png")  # * stays in one directory
    assert glob_regex("/a/**/x.png").match("/a/x.png")
    assert glob_regex("/a/**/x.png").match("/a/b/c/x.png")
    assert glob_regex("/a/?.png").match("/a/x.png") and not glob_regex("/a/?.png").match(
        "/a/xy.png"
    )
    assert glob_regex("/a/[!x].png").match("/a/y.png") and not glob_regex("/a/[!x].png").match(
        "/a/x.png"
    )


def test_one_image(tree: Path) -> None:
    inputs = list_inputs(str(tree / "a.png"))
    assert (inputs.ids, inputs.paths, inputs.kind) == (["a.png"], [str(tree / "a.png")], "image")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_manifests_with_ids_and_relative_paths(tree: Path, suffix: str) -> None:
    rows = [
        {"id": "007", "path": "a.png"},  # relative to the manifest's directory
        {"id": "008", "path": str(tree / "sub" / "d.webp")},
        {"id": "x", "path": "s3://bucket/key.jpg"},  # URIs pass through
    ]
    inputs = list_inputs(str(write_manifest(tree / f"list{suffix}", rows)))
    assert inputs.ids == ["007", "008", "x"]  # text, zeros kept
    assert inputs.paths == [
        str(tree / "a.png"),
        str(tree / "sub" / "d.webp"),
        "s3://bucket/key.jpg",
    ]
    assert inputs.kind == "manifest"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_manifests_without_ids_use_the_path_from_a_uri_column(tree: Path, suffix: str) -> None:
    rows = [{"uri": "a.png"}, {"uri": "missing.png"}]  # a missing file is listed (error row)
    inputs = list_inputs(str(write_manifest(tree / f"list{suffix}", rows)))
    assert inputs.ids == ["a.png", "missing.png"]
    assert inputs.paths == [str(tree / "a.png"), str(tree / "missing.png")]


def test_numeric_ids_become_text(tree: Path) -> None:
    path = tree / "list.jsonl"
    path.write_text('{"id": 1, "path": "a.png"}\n{"id": 2, "path": "B.JPG"}\n')
    assert list_inputs(str(path)).ids == ["1", "2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "path": "a.png"}\n{"id": "a", "path": "B.JPG"}\n', "used more than once"),
        ('{"file": "a.png"}\n', "no `path` or `uri` column"),
        ('{"path": "a.png"}\n{"path": null}\n', "empty in 1 row"),
        ("not json\n", "cannot read as jsonl"),
    ],
)
def test_bad_manifests_are_refused_with_a_reason(tree: Path, content: str, message: str) -> None:
    path = tree / "list.jsonl"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        list_inputs(str(path))


def test_nothing_to_list(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="no images"):
        list_inputs(str(tmp_path))
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(SourceError, match="neither"):
        list_inputs(str(tmp_path / "x.txt"))


def test_filesystem_uris_through_fsspec() -> None:
    """Any scheme pyarrow or fsspec reads: here fsspec's in-memory filesystem."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("pics/a.png", "pics/sub/b.jpg", "pics/c.txt"):
        fs.pipe(f"/bucket/{name}", b"x")
    fs.pipe("/bucket/list.jsonl", b'{"path": "pics/a.png", "id": "one"}\n')
    inputs = list_inputs("memory://bucket/pics")
    assert inputs.ids == ["a.png", "sub/b.jpg"]
    assert inputs.paths == ["memory:///bucket/pics/a.png", "memory:///bucket/pics/sub/b.jpg"]
    assert list_inputs("memory://bucket/pics/**/*.jpg").ids == ["sub/b.jpg"]
    manifest = list_inputs("memory://bucket/list.jsonl")
    assert (manifest.ids, manifest.paths) == (["one"], ["memory://bucket/pics/a.png"])
