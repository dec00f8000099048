"""The paper's claims (AAM vs ASL vs BCE; GCN vs linear vs ML-Decoder) with backbone training on
OpenClipart-ML, through the real `mltag-train`: one run per head x loss x seed, each the bundled
model's recipe (configs/default_model.yaml) with only the head and loss changed, then a table.

    python benchmarks/paper_claims.py [--rows linear+asl,ml_decoder+aam] [--seeds 0 1] \
        [--out build/claims] [--data .cache/datasets/openclipart-scenes] \
        [--set train.regime=full --set train.epochs=25 ...]

On 2 CPU cores each run takes about 9 minutes (the partial regime: the last two backbone
stages, the final conv and the head train over cached maps). On a GPU the same command trains
the whole network with `--set train.regime=full` (CUDA AMP is on by default there); on one
H200 with 16 cores, `--jobs 6 --set data.num_workers=3` ran six at a time, about 2.3 minutes
each. Runs that finished are reused (delete their folder to redo one). Results:
benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADS = ("linear", "gcn", "ml_decoder")
LOSSES = ("asl", "aam", "bce")
# ML-Decoder as the earlier default model sized it for a CPU.
HEAD_SETTINGS = {"ml_decoder": ["head.ml_decoder.embed_dim=256", "head.ml_decoder.ff_dim=1024"]}


def run_row(row: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    head, loss = row.split("+")
    out = args.out / f"{head}-{loss}-s{seed}"
    metrics = out / "metrics.json"
    if not (metrics.is_file() and "test" in (json.loads(metrics.read_text()).get("final") or {})):
        sets = [f"model.head={head}", f"loss.name={loss}", f"train.seed={seed}",
                "train.progress=false", *HEAD_SETTINGS.get(head, []), *args.set]  # fmt: skip
        cmd = [sys.executable, "-m", "model_training", "train", "--config", str(args.config),
               "--output", str(out)] + [x for s in sets for x in ("--set", s)]  # fmt: skip
        if (out / "checkpoints" / "last.pt").is_file():
            cmd.append("--resume")  # an interrupted run goes on from its last epoch
        elif out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        if args.jobs > 1:  # runs side by side: each one's console goes to its own file
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "console.log", "w") as log:
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        else:
            subprocess.run(cmd, cwd=ROOT, check=True)
        (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    final = json.loads(metrics.read_text())["final"]
    wall = out / "wall_seconds.txt"
    return {
        "val mAP": final["selected"]["mAP"],  # what a choice between rows may look at
        **test_scores(final["test"]),
        "min": float(wall.read_text()) / 60 if wall.is_file() else float("nan"),
    }


def test_scores(final: dict[str, float]) -> dict[str, float]:
    return {
        "mAP": final["mAP"],
        "CF1@0.5": final["CF1@0.5"],
        "OF1@0.5": final["OF1@0.5"],
        "CF1@cal": final["CF1@thr"],
        "OF1@cal": final["OF1@thr"],
    }


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {(max(values) - min(values)) / 2:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    rows = [f"{h}+{loss}" for h in HEADS for loss in LOSSES]
    ap.add_argument("--rows", default=",".join(rows), help="head+loss, comma-separated")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default_model.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "claims")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", type=Path, default=None,
                    help="a data set folder with train/val/test.jsonl instead of the config's "
                    "(OpenClipart-Scenes: `mltag-train data scenes`)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time (a GPU machine with many cores: its data loading is "
                    "the limit, so set data.num_workers to about cores / jobs)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.data is not None:
        for split in ("train", "val", "test"):
            if not (args.data / f"{split}.jsonl").is_file():
                ap.error(f"{args.data / f'{split}.jsonl'} not found")
            args.set = [f"data.{split}={args.data / f'{split}.jsonl'}", *args.set]
    rows = args.rows.split(",")
    for row in rows:
        if row.split("+")[0] not in HEADS or row.split("+")[-1] not in LOSSES:
            ap.error(f"unknown row {row!r}; rows are head+loss from {HEADS} x {LOSSES}")
    # Seed-major order: with --jobs, every row's first seed finishes before any second one.
    pairs = [(row, seed) for seed in args.seeds for row in rows]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        scored = pool.map(lambda p: run_row(p[0], p[1], args), pairs)
        done = dict(zip(pairs, scored, strict=True))
    results = {row: [done[(row, seed)] for seed in args.seeds] for row in rows}
    keys = ("val mAP", "mAP", "CF1@0.5", "OF1@0.5", "CF1@cal", "OF1@cal", "min")
    sets = " ".join(args.set)
    print(f"# {args.config.name} {sets}; seeds {args.seeds}; test split; ± half range")
    print("| head + loss | seeds | val mAP | test mAP | CF1@0.5 | OF1@0.5 | CF1@cal | OF1@cal "
          "| wall min |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row, runs in results.items():
        cells = " | ".join(cell([r[k] for r in runs]) for k in keys)
        print(f"| {row} | {len(runs)} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
