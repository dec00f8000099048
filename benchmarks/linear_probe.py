"""The frozen-feature baseline: the offline ImageNet EfficientNet-Lite0 trunk, global-pooled
features (1280-d) computed once and cached, one logistic regression per label.

    python benchmarks/linear_probe.py --data .cache/datasets/openclipart-ml --out build/probe \
        [--size 224] [--C 0.01 0.1 1]

The regularisation C is chosen on the validation split (mAP); test is evaluated once with the
chosen C, at 0.5 and at per-label F1-optimal thresholds fitted on validation (floor 0.1), by
the same evaluation code as every other row (model_training.metrics). Wall times: features
(decode + forward, every split) and fitting (every C tried) are reported separately; a second
run reuses the cached features (`--out`). Results:
benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NORMS = {
    "lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def read_split(data: Path, split: str, labels: list[str]) -> tuple[list[Path], np.ndarray]:
    rows = [json.loads(x) for x in (data / f"{split}.jsonl").read_text().splitlines() if x.strip()]
    index = {name: i for i, name in enumerate(labels)}
    targets = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for i, r in enumerate(rows):
        for name in r["labels"]:
            targets[i, index[name]] = 1
    return [data / r["image"] for r in rows], targets


def load_image(path: Path, size: int, norm: str) -> np.ndarray:
    """Stretch-resize (bilinear) onto white, as the mltag rows' preprocessing does."""
    with Image.open(path) as raw:
        im = raw.convert("RGBA")
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, im).convert("RGB")
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    mean, std = (np.asarray(v, dtype=np.float32) for v in NORMS[norm])
    x = (np.asarray(rgb, dtype=np.float32) / 255.0 - mean) / std
    return x.transpose(2, 0, 1)  # (3, H, W)


@torch.no_grad()
def features(paths: list[Path], size: int, norm: str, batch: int) -> np.ndarray:
    from model_training.models.backbone import create_timm_body

    trunk = create_timm_body("efficientnet_lite0", "package", global_pool="avg").eval()
    out = []
    for start in range(0, len(paths), batch):
        x = np.stack([load_image(p, size, norm) for p in paths[start : start + batch]])
        out.append(trunk(torch.from_numpy(x)).numpy())  # (B, 1280)
    return np.concatenate(out)


def fit_predict(
    xtr: np.ndarray, ytr: np.ndarray, xs: list[np.ndarray], c: float
) -> list[np.ndarray]:
    """One L2 logistic regression per label (lbfgs), standardised features; probabilities of
    each array in `xs`. A label without both classes in train gets its base rate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    xtr_s = scaler.transform(xtr)
    xs_s = [scaler.transform(x) for x in xs]
    outs = [np.zeros((len(x), ytr.shape[1]), dtype=np.float32) for x in xs]
    for c_idx in range(ytr.shape[1]):
        y = ytr[:, c_idx]
        if y.min() == y.max():
            for o in outs:
                o[:, c_idx] = y.mean()
            continue
        clf = LogisticRegression(C=c, max_iter=2000).fit(xtr_s, y)
        for o, x in zip(outs, xs_s, strict=True):
            o[:, c_idx] = clf.predict_proba(x)[:, 1]
    return outs


def cached_features(
    args: argparse.Namespace, labels: list[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Per split (features, targets), computed once into --out; seconds spent computing."""
    args.out.mkdir(parents=True, exist_ok=True)
    splits, spent = {}, 0.0
    for split in ("train", "val", "test"):
        paths, targets = read_split(args.data, split, labels)
        cache = args.out / f"features-{split}-{args.size}-{args.norm}.npy"
        if not cache.is_file():
            t0 = time.perf_counter()
            np.save(cache, features(paths, args.size, args.norm, args.batch))
            spent += time.perf_counter() - t0
        splits[split] = (np.load(cache), targets)
    return splits, spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="{train,val,test}.jsonl, labels.txt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--norm", choices=sorted(NORMS), default="lite")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--C", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p.add_argument("--floor", type=float, default=0.1)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from model_training.metrics import evaluate_scores, f1_optimal_thresholds

    labels = [x for x in (args.data / "labels.txt").read_text().splitlines() if x.strip()]
    splits, spent = cached_features(args, labels)
    timing = args.out / f"features_s-{args.size}-{args.norm}.json"
    if spent > 0:  # computed now (not read from the cache): remember how long it took
        timing.write_text(json.dumps(spent))
    feat_s = float(json.loads(timing.read_text())) if timing.is_file() else spent
    (xtr, ytr), (xva, yva), (xte, yte) = splits["train"], splits["val"], splits["test"]
    t0 = time.perf_counter()
    tried = {c: fit_predict(xtr, ytr, [xva, xte], c) for c in args.C}
    fit_s = time.perf_counter() - t0
    val_map = {c: evaluate_scores(v, yva).mAP for c, (v, _) in tried.items()}
    best = max(val_map, key=lambda c: val_map[c])
    s_val, s_test = tried[best]
    thresholds = f1_optimal_thresholds(s_val, yva, floor=args.floor)
    result = {
        "C": best, "val_mAP_by_C": val_map, "features_s": feat_s, "fit_s": fit_s,
        "wall_s": feat_s + fit_s, "size": args.size, "norm": args.norm,
        "torch_threads": torch.get_num_threads(),
        **evaluate_scores(s_test, yte, thresholds).summary(),
    }  # fmt: skip
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print("| recipe | wall (features + fit) | test mAP | CF1@0.5 | OF1@0.5 | CF1@thr | OF1@thr |")
    print("|---|---|---|---|---|---|---|")
    print(f"| linear probe, Lite0 {args.size}px frozen, C={best:g} | {feat_s:.0f} + {fit_s:.0f} s"
          f" | {result['mAP']:.1f} | {result['CF1@0.5']:.1f} | {result['OF1@0.5']:.1f} | "
          f"{result['CF1@thr']:.1f} | {result['OF1@thr']:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
