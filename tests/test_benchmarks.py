"""The benchmark scripts still run end to end (tiny data, tiny budget): numbers are not checked
here, only that every row is trained, evaluated and timed, and the table is printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.synth import COLOURS, make_images

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jsonl_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jsonl")
    for split, (n, seed) in {"train": (32, 0), "val": (16, 1), "test": (16, 2)}.items():
        items = make_images(root, n, size=48, seed=seed, p=0.5)
        lines = [json.dumps({"image": rel, "labels": labels}) for rel, labels in items]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("\n".join(COLOURS) + "\n")
    return root


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_grid_runs_every_requested_row(jsonl_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    rows = ["peer", "linear+aam", "gcn+asl", "ml_decoder+bce"]
    stdout = _run("benchmarks/grid.py", "--data", str(jsonl_data), "--out", str(out),
                  "--size", "64", "--epochs", "1", "--batch", "8", "--seeds", "0", "1",
                  "--repeats", "2", "--rows", *rows)  # fmt: skip
    results = json.loads((out / "results.json").read_text())["rows"]
    assert list(results) == rows
    for row in results.values():
        assert set(row["seeds"]) == {"0", "1"}
        assert 0 <= row["seeds"]["0"]["mAP"] <= 100
        assert row["GMACs"] > 0.01 and row["latency_ms"] > 0
    assert stdout.count("\n| ") == len(rows) + 1  # header + one line per row
    assert {"train.npy", "val.npy", "test.npy", "labels.txt"} <= {p.name for p in out.iterdir()}


def test_peer_finetune_trains_and_scores(jsonl_data: Path, tmp_path: Path) -> None:
    weights = tmp_path / "lite0.pth"
    out = tmp_path / "peer"
    _run("benchmarks/peer_finetune.py", "--data", str(jsonl_data), "--weights", str(weights),
         "--out", str(out), "--size", "64", "--epochs", "1", "--batch", "8")  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert {"mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr", "train_s"} <= set(result)
    assert weights.is_file()


@pytest.mark.slow
def test_load_benchmark_quick_run() -> None:
    """benchmarks/load.py against the real default model and service, short cells: every
    section is printed, no request fails, and the server survives the overload."""
    out = _run("benchmarks/load.py", "--quick", "--port", "8797")
    for section in ("## Reference", "## Service (closed loop)", "median ratio", "## Overload",
                    "## Batching on"):  # fmt: skip
        assert section in out, out
    service_rows = [r for r in out.splitlines() if r.startswith(("| 640x480 | ", "| 1920x1080 | "))]
    closed_loop = [r.split("|") for r in service_rows if len(r.split("|")) == 15]
    assert closed_loop and all(int(cells[9]) == 0 for cells in closed_loop), out  # err column
    overload = out.split("## Overload", 1)[1].splitlines()
    assert overload[3].rstrip().endswith("| True |"), out  # alive after 4x overload


def test_linear_probe_fits_and_scores(jsonl_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    stdout = _run("benchmarks/linear_probe.py", "--data", str(jsonl_data), "--out", str(out),
                  "--size", "64", "--batch", "16", "--C", "0.1", "1")  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert {"mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr", "wall_s", "C"} <= set(result)
    assert result["C"] in (0.1, 1.0) and 0 <= result["mAP"] <= 100
    assert "| linear probe" in stdout
    # a second run reuses the cached features and still reports their first cost
    again = _run("benchmarks/linear_probe.py", "--data", str(jsonl_data), "--out", str(out),
                 "--size", "64", "--C", "1")  # fmt: skip
    assert json.loads((out / "result.json").read_text())["features_s"] == result["features_s"]
    assert "| linear probe" in again


def test_paper_claims_runs_rows_on_another_data_set(jsonl_data: Path, tmp_path: Path) -> None:
    """`--data` points every run at another data set's splits (OpenClipart-Scenes); each row
    is a real `mltag-train` run, and a finished run is reused."""
    out = tmp_path / "claims"
    args = ["benchmarks/paper_claims.py", "--data", str(jsonl_data), "--out", str(out),
            "--rows", "linear+asl,gcn+bce", "--set", "data.image_size=64",
            "--set", "train.epochs=1", "--set", "train.batch_size=8",
            "--set", "data.num_workers=0"]  # fmt: skip
    stdout = _run(*args)
    for run in ("linear-asl-s0", "gcn-bce-s0"):
        final = json.loads((out / run / "metrics.json").read_text())["final"]
        assert final["test"]["num_images"] == 16  # the test split of --data
        assert str(jsonl_data) in (out / run / "config.yaml").read_text()
    assert "| linear+asl | 1 |" in stdout and "| gcn+bce | 1 |" in stdout
    stamp = (out / "linear-asl-s0" / "wall_seconds.txt").stat().st_mtime
    _run(*args)
    assert (out / "linear-asl-s0" / "wall_seconds.txt").stat().st_mtime == stamp


def test_peers_runner_measures_mltag_beside_the_naive_server() -> None:
    """benchmarks/peers/run.py starts the real service and the naive FastAPI + ORT peer on the
    bundled default model, measures every cell with no failed request, and checks the
    targets (BentoML and Ray Serve need their own venv: not here)."""
    from tests.service.live import free_port

    out = _run("benchmarks/peers/run.py", "--servers", "mltag,naive", "--rounds", "1",
               "--duration", "0.5", "--warmup", "0.2", "--peer-python", sys.executable,
               "--port", str(free_port()))  # fmt: skip
    rows = [r.split("|") for r in out.splitlines() if r.startswith(("| 640x480 ", "| 1920x1080 "))]
    rows = [cells for cells in rows if len(cells) == 12]  # the table, not the targets
    assert len(rows) == 2 * 2 * 2, out  # sizes x concurrencies x servers
    for cells in rows:
        assert float(cells[4]) > 0 and float(cells[8]) > 0, out  # img/s, CPU ms per image
        assert int(cells[10]) == 0, out  # errors
    naive = [cells for cells in rows if cells[3].strip() == "naive"]
    assert all(float(cells[5]) > 0 for cells in naive), out  # its ratio to mltag
    assert out.count("≥ 1.25× naive") == 2 and out.count("p50 ≤ naive") == 2, out
    assert "| 640x480 | naive | " in out and "| 1920x1080 | naive | " in out, out  # per round
