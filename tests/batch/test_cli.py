"""`mltag-batch`: options checked as `/tag` checks them, and a run that cannot start exits 2
with a plain message, before any Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltag_batch.cli import build_parser, config_from, main

from .conftest import DEFAULT_MODEL


def args(*extra: str, src: str = "in", out: str = "out") -> list[str]:
    return ["--artifact", str(DEFAULT_MODEL), "--input", src, "--output", out, *extra]


def test_options_become_the_config() -> None:
    options = ["--format", "jsonl", "--all-scores", "--min-score", "0.2", "--top-k", "5",
               "--thresholds", '{"map": 0.1}', "--batch-size", "8", "--concurrency", "3",
               "--cpus-per-actor", "2", "--shard-size", "100", "--max-pixels", "1000"]  # fmt: skip
    ns = build_parser().parse_args(args(*options))
    config = config_from(ns)
    assert (config.fmt, config.batch_size, config.concurrency) == ("jsonl", 8, 3)
    assert (config.cpus_per_actor, config.shard_size) == (2.0, 100)
    o = config.options
    assert (o.all_scores, o.min_score, o.top_k, o.max_pixels) == (True, 0.2, 5, 1000)
    assert o.thresholds == {"map": 0.1}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--thresholds", "{dog: 0.3}"], "must be a JSON object"),
        (["--thresholds", "[0.3]"], "must be a JSON object"),
        (["--thresholds", '{"dog": 1.5}'], "between 0 and 1"),
        (["--thresholds", '{"dog": true}'], "between 0 and 1"),
        (["--min-score", "1.2"], "between 0 and 1"),
        (["--top-k", "0"], "at least 1"),
        (["--format", "csv"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(args(*extra))
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_run_that_cannot_start_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"x")
    src, out = str(tmp_path / "in"), str(tmp_path / "out")

    assert main(args("--thresholds", '{"no such label": 0.3}', src=src, out=out)) == 2
    assert "unknown label(s) in --thresholds: 'no such label'" in capsys.readouterr().err

    assert main(args(src=str(tmp_path / "nope"), out=out)) == 2
    assert "does not exist" in capsys.readouterr().err

    assert main(["--artifact", str(tmp_path), "--input", src, "--output", out]) == 2
    assert "manifest.json" in capsys.readouterr().err

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "part-x.parquet").write_bytes(b"")
    assert main(args(src=src, out=str(tmp_path / "taken"))) == 2
    assert "not an mltag-batch output" in capsys.readouterr().err
