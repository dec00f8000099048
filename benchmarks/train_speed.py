"""What each CPU training regime costs per image, and whether bf16 autocast or torch.compile
pays: training steps (forward, ASL loss, backward, AdamW) of EfficientNet-Lite0 with a linear
head over 137 labels, on synthetic in-memory batches, interleaved rounds, median img/s.

    python benchmarks/train_speed.py [--batch 64] [--rounds 3] [--steps 4] \
        [--compile] [--only "2 stages"]

Variants: the whole network at 224 and 160 px (`train.regime=full`; 160 px is what
progressive resizing would run first), and the trainable rest of `train.regime=partial` over
cached maps (last 2 stages: 112x14x14 in; last 3: 80x14x14 in). `bf16`: torch.autocast on the
CPU in bfloat16 (pays where the CPU has AVX-512 BF16 or AMX); `compile`: torch.compile
(inductor), compile time excluded and reported. Data loading is excluded: the regimes differ in
how often they decode (full: every epoch; partial: once), which the recipe table's wall times
show. Results: benchmarks/RESULTS.md#cpu-training-budget-on-openclipart-ml-issue-20.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_training.losses import build_loss
from model_training.models.backbone import create_timm_body

LABELS = 137


class Net(nn.Module):
    """Stages `first..` of a Lite0 body, then the final conv, pooling and a linear head."""

    def __init__(self, first: int) -> None:
        super().__init__()
        body: Any = create_timm_body("efficientnet_lite0", "package")  # timm, typed loosely
        stem = [body.conv_stem, body.bn1] if first == 0 else []
        self.body = nn.Sequential(*stem, *body.blocks[first:], body.conv_head, body.bn2)
        self.fc = nn.Linear(1280, LABELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


def variants(batch: int) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (first trained stage, input shape)."""
    return {
        "full 224 px": (0, (batch, 3, 224, 224)),
        "full 160 px": (0, (batch, 3, 160, 160)),
        "partial, last 3 stages (224 px)": (4, (batch, 80, 14, 14)),
        "partial, last 2 stages (224 px)": (5, (batch, 112, 14, 14)),
    }


def make_step(first: int, shape: tuple[int, ...], bf16: bool, compiled: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    net: nn.Module = Net(first).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = build_loss("asl", "sum", gamma_pos=1.0)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(shape[0], LABELS) > 0.97).float()
    forward = torch.compile(net) if compiled else net

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per cell and round")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compile", action="store_true", help="add torch.compile variants")
    ap.add_argument("--only", default="", help="run the variants whose name contains this")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = [("fp32", False, False), ("bf16", True, False)]
    if args.compile:
        modes += [("fp32 compile", False, True), ("bf16 compile", True, True)]
    cells: dict[tuple[str, str], Callable[[], None]] = {}
    warmup: dict[tuple[str, str], float] = {}
    chosen = {k: v for k, v in variants(args.batch).items() if args.only in k}
    for name, (first, shape) in chosen.items():
        for mode, bf16, compiled in modes:
            step = make_step(first, shape, bf16, compiled)
            t0 = time.perf_counter()
            step()  # first step: allocations, and compilation where compiled
            warmup[(name, mode)] = time.perf_counter() - t0
            cells[(name, mode)] = step
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in cells}
    for _ in range(args.rounds):
        for key, step in cells.items():
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            rates[key].append(args.batch / statistics.median(times))
    print(f"# batch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds x "
          f"{args.steps} steps; torch {torch.__version__}")  # fmt: skip
    head = " | ".join(f"{m} img/s" for m, _, _ in modes)
    print(f"| variant | {head} | bf16 / fp32 |")
    print("|---|" + "---|" * (len(modes) + 1))
    for name in chosen:
        med = [statistics.median(rates[(name, m)]) for m, _, _ in modes]
        row = " | ".join(f"{v:.1f}" for v in med)
        print(f"| {name} | {row} | {med[1] / med[0]:.2f}x |")
    if args.compile:
        print("# first compiled step (s): " + ", ".join(
            f"{n}/{m} {warmup[(n, m)]:.0f}" for (n, m) in warmup if "compile" in m))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
