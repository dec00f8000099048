"""How the threshold floor and the calibration rule trade per-label against pooled F1, for a
finished run: its selected weights score val and test once, then each rule's thresholds are
fitted on val and measured on both.

    python benchmarks/threshold_floors.py --run build/default-model-run

`train.threshold_floor=auto` picks, of the floors below, the one with the best val OF1. Results:
benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_training.calibration import AUTO_FLOORS, calibrate, parse_rule
from model_training.data import read_annotations
from model_training.data.loaders import eval_loader
from model_training.data.transforms import preprocessing_for
from model_training.engine import predict
from model_training.metrics import evaluate_scores
from model_training.rundir import load_trained


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished run directory")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    model, cfg, labels, _ = load_trained(args.run)
    prep = preprocessing_for(cfg.data)
    scores = {}
    for split in ("val", "test"):
        data = read_annotations(cfg.data, getattr(cfg.data, split), labels)
        loader = eval_loader(data, prep, args.batch, cfg.data.num_workers)
        scores[split] = predict(model, loader, torch.device("cpu"), False)
    (sv, yv), (st, yt) = scores["val"], scores["test"]
    rules: list[tuple[str, np.ndarray]] = [("0.5 everywhere", np.full(len(labels), 0.5))]
    for floor in AUTO_FLOORS:
        thr = calibrate(sv, yv, parse_rule("f1"), floor)[0]
        rules.append((f"F1-optimal, floor {floor:g}", thr))
    for p in (0.7, 0.8):
        rule = parse_rule(f"precision:{p}")
        rules.append((f"precision {p:g}, floor 0.1", calibrate(sv, yv, rule, 0.1)[0]))
    print(f"# {args.run}: {len(yv)} val / {len(yt)} test images; percent")
    print("| thresholds | val CF1 / OF1 | test CP / CR / CF1 | test OP / OR / OF1 |")
    print("|---|---|---|---|")
    for name, thr in rules:
        v = evaluate_scores(sv, yv, thr).summary()
        t = evaluate_scores(st, yt, thr).summary()
        print(
            f"| {name} | {v['CF1@thr']:.1f} / {v['OF1@thr']:.1f} | {t['CP@thr']:.1f} / "
            f"{t['CR@thr']:.1f} / {t['CF1@thr']:.1f} | {t['OP@thr']:.1f} / {t['OR@thr']:.1f} / "
            f"{t['OF1@thr']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
