"""The command line (`main(argv) -> int`) and the apt-get/dpkg fetch step (simulated)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from model_training.dataset_builders import fetch
from model_training.dataset_builders.cli import add_commands, main
from model_training.dataset_builders.jsonl import read_jsonl


@pytest.mark.parametrize("command", [[], ["openclipart"], ["scenes"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_openclipart_then_scenes(clipart_tree: Path, tmp_path: Path) -> None:
    ml, scenes = tmp_path / "ml", tmp_path / "scenes"
    common = ["--max-side", "32", "--object-side", "32", "--max-pixels", "6000"]
    assert (
        main(
            [
                "openclipart",
                "--root",
                str(clipart_tree),
                "--output",
                str(ml),
                "--min-count",
                "3",
                "--split",
                "0.5",
                "0.25",
                "0.25",
                *common,
            ]
        )
        == 0
    )
    assert len(read_jsonl(ml / "train.jsonl")) > 0
    card = (ml / "DATASET_CARD.md").read_text()
    assert "python -m model_training.dataset_builders openclipart --root" in card
    assert (
        main(
            [
                "scenes",
                "--source",
                str(ml),
                "--output",
                str(scenes),
                "--train",
                "3",
                "--val",
                "1",
                "--test",
                "1",
                "--canvas",
                "48",
                "--max-objects",
                "3",
            ]
        )
        == 0
    )
    assert [len(read_jsonl(scenes / f"{s}.jsonl")) for s in ("train", "val", "test")] == [3, 1, 1]


def test_errors_return_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openclipart", "--root", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert main(["scenes", "--source", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err


def test_commands_can_be_mounted_elsewhere() -> None:
    parser = argparse.ArgumentParser(prog="mltag-train")
    data = parser.add_subparsers(dest="command").add_parser("data")
    add_commands(data.add_subparsers(dest="dataset", required=True))
    args = parser.parse_args(["data", "scenes", "--source", "nowhere", "--output", "b"])
    assert args.dataset == "scenes" and args.canvas == 384
    assert args.func(args) == 2  # runs without main()'s extras: missing source → error


def test_fetch_downloads_once_and_unpacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: Path | None = None) -> None:
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "download"]:
            assert cwd is not None
            (cwd / f"{cmd[2]}_1%3a0.18+dfsg-19_all.deb").write_bytes(b"deb")
        elif cmd[0] == "dpkg":
            kind = "png" if "png" in Path(cmd[2]).name else "svg"
            (Path(cmd[3]) / fetch.SHARE / kind).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(fetch, "_run", fake_run)
    root = fetch.fetch_openclipart(tmp_path, log=lambda _: None)
    assert root == tmp_path / "root" / fetch.SHARE
    assert [c[:3] for c in calls[:2]] == [
        ["apt-get", "download", "openclipart-png"],
        ["apt-get", "download", "openclipart-svg"],
    ]
    assert [c[:2] for c in calls[2:]] == [["dpkg", "-x"], ["dpkg", "-x"]]
    calls.clear()
    assert fetch.fetch_openclipart(tmp_path, log=lambda _: None) == root
    assert calls == []  # cached


def test_fetch_error_mentions_apt_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def failing(cmd: list[str], cwd: Path | None = None) -> None:
        raise fetch.FetchError("E: Unable to locate package openclipart-png")

    monkeypatch.setattr(fetch, "_run", failing)
    with pytest.raises(fetch.FetchError, match="apt-get update"):
        fetch.fetch_openclipart(tmp_path, log=lambda _: None)


def test_find_root_accepts_a_plain_tree(clipart_tree: Path) -> None:
    assert fetch.find_root(clipart_tree) == clipart_tree
    assert fetch.find_root(clipart_tree / "png") is None
