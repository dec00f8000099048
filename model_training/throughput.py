"""Trainer overhead check: images/s of our training step vs a plain timm training loop.

Same backbone, batch, input size and device, synthetic in-memory batches (data loading is
excluded on purpose: it is the same DataLoader either way). The plain loop is
timm model -> BCEWithLogits -> SGD step (AMP on CUDA). Ours runs `engine.train_step` with the
classifier (backbone + linear head), the loss in fp32, OneCycle, and optionally EMA / SAM.
Variants are measured in interleaved rounds and the median is reported, so a noisy shared
machine affects all of them alike.

    python -m model_training.throughput --backbone resnet18 --batch-size 32 --image-size 224

SAM does two forward/backward passes per step by design. Measured results:
benchmarks/RESULTS.md#trainer-overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

Step = Callable[[torch.Tensor, torch.Tensor], object]


def _plain_step(backbone: str, num_classes: int, dev: torch.device, amp: bool) -> Step:
    import timm

    model: nn.Module = timm.create_model(backbone, num_classes=num_classes).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    crit = nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, enabled=amp):
            loss = crit(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def _our_step(
    backbone: str, num_classes: int, dev: torch.device, amp: bool, variant: str, total: int
) -> Step:
    from .config import load_config
    from .engine import StepContext, train_step
    from .losses import build_loss
    from .models import build_model
    from .optim import SAM, ModelEMA, build_optimizer, build_scheduler

    sam = "sam" in variant
    overrides = [f"model.backbone={backbone}", "model.head=linear", "loss.name=bce",
                 "optim.name=sgd", f"optim.sam={sam}", "train.lr=0.001"]  # fmt: skip
    cfg = load_config(None, overrides)
    clf = build_model(cfg, [str(i) for i in range(num_classes)]).to(dev).train()
    optimizer = build_optimizer(clf, cfg.optim, cfg.train.lr)
    ctx = StepContext(
        model=clf,
        loss_fn=build_loss("bce", "mean"),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.optim, cfg.train.lr, total),
        scaler=torch.amp.GradScaler("cuda", enabled=amp),
        device=dev,
        amp=amp,
        sam=SAM(optimizer, 0.05) if sam else None,
        ema=ModelEMA(clf, 0.999) if "ema" in variant else None,
        ema_source=clf,
    )
    return lambda x, y: train_step(ctx, x, y)


def _images_per_s(
    step: Step,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    dev: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = clock()
    n = 0
    for x, y in batches:
        step(x, y)
        n += x.shape[0]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return n / (clock() - start)


def compare(
    backbone: str = "resnet18",
    batch_size: int = 32,
    image_size: int = 224,
    num_classes: int = 20,
    steps: int = 10,
    rounds: int = 3,
    device: str = "auto",
    amp: bool = True,
    variants: tuple[str, ...] = ("plain", "ours", "ours+ema"),
    cpu_clock: bool = False,
) -> dict[str, float]:
    """Median images/s per variant over `rounds` interleaved rounds of `steps` steps.

    `cpu_clock=True` divides by this process's CPU time instead of wall time: on a CPU shared
    with other jobs that measures the work each variant does, not who got the cores."""
    clock = time.process_time if cpu_clock else time.perf_counter
    from .distributed import resolve_device

    dev = resolve_device(device)
    use_amp = amp and dev.type == "cuda"
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(batch_size, 3, image_size, image_size, generator=g).to(dev),
            (torch.rand(batch_size, num_classes, generator=g) > 0.8).float().to(dev),
        )
        for _ in range(steps)
    ]
    total = (rounds + 1) * steps
    torch.manual_seed(0)
    steps_by_variant = {
        v: _plain_step(backbone, num_classes, dev, use_amp)
        if v == "plain"
        else _our_step(backbone, num_classes, dev, use_amp, v, total)
        for v in variants
    }
    for step in steps_by_variant.values():  # warm-up
        _images_per_s(step, batches[:2], dev)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, step in steps_by_variant.items():
            samples[v].append(_images_per_s(step, batches, dev, clock))
    return {v: statistics.median(s) for v, s in samples.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="plain,ours,ours+ema,ours+sam")
    p.add_argument("--cpu-clock", action="store_true", help="images per CPU-second (shared CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is steadiest on a busy CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = compare(args.backbone, args.batch_size, args.image_size, steps=args.steps,
                  rounds=args.rounds, device=args.device,
                  variants=tuple(args.variants.split(",")), cpu_clock=args.cpu_clock)  # fmt: skip
    base = res.get("plain")
    unit = "img/CPU-s" if args.cpu_clock else "img/s"
    for k, v in res.items():
        ratio = f"  ({v / base:.2f}x plain)" if base else ""
        print(f"{k:10s} {v:8.1f} {unit}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
