"""The training run: data -> model -> epochs (train, validate raw and EMA, keep the better,
early stopping, checkpoint) -> calibrated thresholds -> one test evaluation -> run directory.

Run directory layout:
    config.yaml          resolved config (everything needed to rebuild the model)
    labels.txt           label order of the model's outputs
    split.json           the validation images (a held-out split is recorded here)
    metrics.json         {"epochs": [...per epoch...], "final": {...}}
    per_class_ap.csv     label, positives in train, val AP, test AP, threshold
    thresholds.json      per-label F1-optimal thresholds, calibrated on the validation split
    curves.png           training loss, learning rate, validation mAP (raw and EMA)
    pr_val.png, pr_test.png   precision-recall curves
    checkpoints/last.pt  everything `--resume` needs (written every epoch)
    checkpoints/best.pt  the selected weights (raw or EMA) + labels + thresholds + config
    train.log            the log

Reproducibility: every epoch reseeds python/numpy/torch from (seed, epoch, rank) and the data
order from (seed, epoch), so a run resumed from `last.pt` repeats exactly what an uninterrupted
run would have done. The test split is evaluated once, after training, with the checkpoint and
thresholds chosen on validation.

Distributed: launched with `torchrun --nproc_per_node N -m model_training.cli train ...`, each
process trains on its shard (DistributedSampler) with DistributedDataParallel (NCCL on GPU, gloo
on CPU); rank 0 validates, writes files and decides early stopping.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .config import Config, ConfigError, load_config
from .data import LabelledSet, MultilabelDataset, Splits, load_splits, read_annotations
from .data.transforms import EvalTransform, TrainTransform, preprocessing_for
from .engine import StepContext, predict, train_one_epoch
from .losses import build_loss
from .metrics import evaluate_scores, f1_optimal_thresholds
from .models import MultilabelClassifier, build_model
from .optim import SAM, ModelEMA, build_optimizer, build_scheduler


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank:
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _init_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return Dist(rank=rank, world=world, local_rank=local)


class RunLogger:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is None:
            return
        print(message, flush=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(message + "\n")


def _loader(
    dataset: MultilabelDataset,
    batch_size: int,
    workers: int,
    train: bool,
    generator: torch.Generator | None = None,
    sampler: DistributedSampler[Any] | None = None,
    pin: bool = False,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        drop_last=train and len(dataset) > batch_size,
        generator=generator,
        pin_memory=pin,
        persistent_workers=False,
    )


def _progress(enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def wrap(it: Iterable[object]) -> Any:
        return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, unit="batch")

    return wrap


def _unwrap(model: nn.Module) -> MultilabelClassifier:
    inner = model.module if hasattr(model, "module") else model
    assert isinstance(inner, MultilabelClassifier)
    return inner


def _load_splits(cfg: Config) -> Splits:
    return load_splits(cfg.data, seed=cfg.train.seed)


def _check_resume_config(cfg: Config, saved: dict[str, Any]) -> None:
    now = cfg.to_dict()
    ignore = {("train", "progress")}
    diffs = [
        f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
        for section, values in now.items()
        for key, value in values.items()
        if (section, key) not in ignore and saved.get(section, {}).get(key) != value
    ]
    if diffs:
        raise ConfigError(
            "--resume with a different config than the run was started with:\n  "
            + "\n  ".join(diffs)
        )


def fit(
    cfg: Config,
    output: str | Path,
    resume: bool = False,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train as `cfg` says into run directory `output`; returns the final metrics.

    `resume=True` continues from `output/checkpoints/last.pt`. `stop_after_epochs` ends this
    process after that many epochs (as an interruption would), leaving a resumable run.
    """
    out = Path(output)
    dist = _init_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    amp = device.type == "cuda" and cfg.train.amp in ("auto", True)
    amp_dtype = torch.bfloat16 if cfg.train.amp_dtype == "bfloat16" else torch.float16
    if dist.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    last_path = out / "checkpoints" / "last.pt"
    if not resume and last_path.exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume or a new --output")
    log = RunLogger(out / "train.log" if dist.main else None)

    state: dict[str, Any] | None = None
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        _check_resume_config(cfg, state["config"])

    seed_everything(cfg.train.seed)
    splits = _load_splits(cfg)
    labels = splits.train.labels
    if dist.main:
        cfg.save(out / "config.yaml")
        (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (out / "split.json").write_text(
            json.dumps({"val": [str(p) for p in splits.val.images]}, indent=1), encoding="utf-8"
        )
        log(f"train: {splits.train.describe()}")
        log(f"val:   {splits.val.describe()}")
        if splits.test is not None:
            log(f"test:  {splits.test.describe()}")
        log(f"device: {device}{' (AMP)' if amp else ''}, processes: {dist.world}")

    prep = preprocessing_for(cfg.data)
    train_ds = MultilabelDataset(splits.train, TrainTransform(prep, cfg.data.augment))
    val_ds = MultilabelDataset(splits.val, EvalTransform(prep))
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2
    generator = torch.Generator()
    sampler: DistributedSampler[Any] | None = None
    if dist.enabled:
        sampler = DistributedSampler(
            train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.train.seed
        )
    pin = device.type == "cuda"
    train_loader = _loader(
        train_ds, cfg.train.batch_size, cfg.data.num_workers, True, generator, sampler, pin
    )
    val_loader = _loader(val_ds, eval_bs, cfg.data.num_workers, False, pin=pin)

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, labels, train_targets=splits.train.targets).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if state is not None:
        model.load_state_dict(state["model"])
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model: nn.Module = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        ddp_model = model
    loss_name = cfg.loss.name
    loss_params = getattr(cfg.loss, loss_name).model_dump() if hasattr(cfg.loss, loss_name) else {}
    loss_fn = build_loss(loss_name, cfg.loss.reduction, **loss_params)
    optimizer = build_optimizer(model, cfg.optim, cfg.train.lr)
    steps_per_epoch = len(train_loader)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    scheduler = build_scheduler(
        optimizer, cfg.optim, cfg.train.lr, steps_per_epoch * cfg.train.epochs
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    ema = ModelEMA(model, cfg.train.ema_decay) if cfg.train.ema else None

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"mAP": -1.0, "epoch": -1, "source": "raw"}
    bad_epochs = 0
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        start_epoch = state["epoch"] + 1
        if state.get("stopped_early"):
            start_epoch = cfg.train.epochs  # the run had ended: only redo the final step
        log(f"resumed from {last_path} at epoch {start_epoch}")

    ctx = StepContext(
        model=ddp_model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        device=device,
        amp=amp,
        sam=SAM(optimizer, cfg.optim.sam_rho) if cfg.optim.sam else None,
        ema=ema,
        ema_source=model,
        grad_clip=cfg.optim.grad_clip,
        amp_dtype=amp_dtype,
        channels_last=cfg.train.channels_last,
    )
    stopped_early = bool(state.get("stopped_early")) if state is not None else False
    for epoch in range(start_epoch, cfg.train.epochs):
        if stop_after_epochs is not None and epoch - start_epoch >= stop_after_epochs:
            return {"interrupted_at_epoch": epoch}
        seed_everything(cfg.train.seed * 100_003 + epoch * 1_009 + dist.rank)
        generator.manual_seed(cfg.train.seed * 7_919 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(
            ctx,
            train_loader,
            cfg.train.max_steps_per_epoch,
            _progress(cfg.train.progress and dist.main, f"epoch {epoch + 1}/{cfg.train.epochs}"),
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": stats.loss,
            "lr": stats.lr,
            "train_images_per_s": stats.throughput * dist.world,
            "train_seconds": stats.seconds,
        }
        stop = torch.zeros(1)
        if dist.main:
            t0 = time.perf_counter()
            s_raw, y_val = predict(
                model, val_loader, device, amp, amp_dtype, cfg.train.channels_last
            )
            record["val_mAP"] = evaluate_scores(s_raw, y_val).mAP
            record["val_mAP_ema"] = None
            if ema is not None:
                s_ema, _ = predict(
                    ema.module, val_loader, device, amp, amp_dtype, cfg.train.channels_last
                )
                record["val_mAP_ema"] = evaluate_scores(s_ema, y_val).mAP
            record["val_seconds"] = time.perf_counter() - t0
            source = "raw"
            score = record["val_mAP"]
            if record["val_mAP_ema"] is not None and record["val_mAP_ema"] > score:
                source, score = "ema", record["val_mAP_ema"]
            improved = score > best["mAP"] + 1e-9
            if improved:
                best = {"mAP": score, "epoch": epoch + 1, "source": source}
                weights = ema.module if (source == "ema" and ema is not None) else model
                _save_best(out, weights, cfg, labels, best)
                bad_epochs = 0
            else:
                bad_epochs += 1
            history.append(record)
            ema_txt = (
                f" ema {record['val_mAP_ema']:.2f}" if record["val_mAP_ema"] is not None else ""
            )
            log(
                f"epoch {epoch + 1}/{cfg.train.epochs}: loss {stats.loss:.4f} lr {stats.lr:.2e} "
                f"{record['train_images_per_s']:.1f} img/s | val mAP raw {record['val_mAP']:.2f}"
                f"{ema_txt} | best {best['mAP']:.2f} ({best['source']}, epoch {best['epoch']})"
            )
            patience = cfg.train.early_stop_patience
            if patience is not None and bad_epochs >= patience:
                stop[0] = 1
            _save_last(last_path, epoch, model, ema, optimizer, scheduler, scaler, cfg,
                       labels, history, best, bad_epochs, bool(stop[0]))  # fmt: skip
            _write_metrics(out, history, None)
        if dist.enabled:
            import torch.distributed as tdist

            tdist.broadcast(stop, src=0)
        if stop.item() > 0:
            stopped_early = True
            log(f"early stopping: no val mAP gain for {cfg.train.early_stop_patience} epochs")
            break

    final: dict[str, Any] = {}
    if dist.main:
        final = _finish(cfg, out, splits, history, best, stopped_early, device, amp, log, amp_dtype)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return final


def _save_best(
    out: Path, weights: nn.Module, cfg: Config, labels: list[str], best: dict[str, Any]
) -> None:
    torch.save(
        {"model": weights.state_dict(), "labels": labels, "config": cfg.to_dict(), "best": best},
        out / "checkpoints" / "best.pt",
    )


def _save_last(
    path: Path,
    epoch: int,
    model: nn.Module,
    ema: ModelEMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: Config,
    labels: list[str],
    history: list[dict[str, Any]],
    best: dict[str, Any],
    bad_epochs: int,
    stopped_early: bool,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "config": cfg.to_dict(),
            "labels": labels,
            "history": history,
            "best": best,
            "bad_epochs": bad_epochs,
            "stopped_early": stopped_early,
        },
        tmp,
    )
    tmp.replace(path)  # never a half-written last.pt


def _write_metrics(out: Path, history: list[dict[str, Any]], final: dict[str, Any] | None) -> None:
    doc = {"epochs": history, "final": final}
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=float), encoding="utf-8")


def load_trained(
    run: str | Path, device: torch.device | str = "cpu"
) -> tuple[MultilabelClassifier, Config, list[str], np.ndarray | None]:
    """The selected model of a run directory, its config, labels and thresholds (if any)."""
    run = Path(run)
    ckpt_path = run / "checkpoints" / "best.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{run}: no checkpoints/best.pt (is this a finished run?)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = load_config(run / "config.yaml")
    labels = list(ckpt["labels"])
    model = build_model(cfg, labels, state=ckpt["model"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    thr_path = run / "thresholds.json"
    thresholds = None
    if thr_path.exists():
        table = json.loads(thr_path.read_text(encoding="utf-8"))
        thresholds = np.array([table[label] for label in labels], dtype=np.float64)
    return model, cfg, labels, thresholds


def _finish(
    cfg: Config,
    out: Path,
    splits: Splits,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    stopped_early: bool,
    device: torch.device,
    amp: bool,
    log: RunLogger,
    amp_dtype: torch.dtype = torch.float16,
) -> dict[str, Any]:
    from .plots import plot_curves, plot_pr_curves

    model, _, labels, _ = load_trained(out, device)
    prep = preprocessing_for(cfg.data)
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2

    def scores_of(data: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
        loader = _loader(MultilabelDataset(data, EvalTransform(prep)), eval_bs,
                         cfg.data.num_workers, False)  # fmt: skip
        return predict(model, loader, device, amp, amp_dtype)

    s_val, y_val = scores_of(splits.val)
    thresholds = f1_optimal_thresholds(s_val, y_val, floor=cfg.train.threshold_floor)
    (out / "thresholds.json").write_text(
        json.dumps(dict(zip(labels, thresholds.tolist(), strict=True)), indent=1),
        encoding="utf-8",
    )
    val_eval = evaluate_scores(s_val, y_val, thresholds)
    final: dict[str, Any] = {
        "selected": best,
        "stopped_early": stopped_early,
        "epochs_run": len(history),
        "ap_policy": "classes without positives are skipped in mAP",
        "val": val_eval.summary(),
        "val_note": "@thr metrics on val are optimistic: the thresholds were fitted on it",
    }
    test_eval = None
    if splits.test is not None:
        s_test, y_test = scores_of(splits.test)
        test_eval = evaluate_scores(s_test, y_test, thresholds)
        final["test"] = test_eval.summary()
        plot_pr_curves(s_test, y_test, labels, out / "pr_test.png", "test")
    plot_pr_curves(s_val, y_val, labels, out / "pr_val.png", "validation")
    if history:
        plot_curves(history, out / "curves.png")
    n_train = (splits.train.targets > 0).sum(axis=0)
    with (out / "per_class_ap.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "train_positives", "val_AP", "test_AP", "threshold"])
        for c, label in enumerate(labels):
            val_ap = val_eval.per_class_ap[c]
            test_ap = test_eval.per_class_ap[c] if test_eval is not None else float("nan")
            w.writerow([
                label,
                int(n_train[c]),
                "" if np.isnan(val_ap) else f"{val_ap * 100:.2f}",
                "" if np.isnan(test_ap) else f"{test_ap * 100:.2f}",
                f"{thresholds[c]:.4f}",
            ])  # fmt: skip
    _write_metrics(out, history, final)
    msg = f"selected {best['source']} weights of epoch {best['epoch']}: val mAP {val_eval.mAP:.2f}"
    if test_eval is not None:
        msg += f", test mAP {test_eval.mAP:.2f}"
    log(msg)
    return final


def evaluate_run(
    run: str | Path,
    data_path: str | Path,
    data_format: str | None = None,
    images_root: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on an annotation file (read against the run's labels)."""
    dev = resolve_device(device)
    model, cfg, labels, thresholds = load_trained(run, dev)
    data_cfg = cfg.data.model_copy(
        update={
            "format": data_format or cfg.data.format,
            "images_root": images_root,
            "num_workers": cfg.data.num_workers if num_workers is None else num_workers,
        }
    )
    data = read_annotations(data_cfg, data_path, labels)
    loader = _loader(
        MultilabelDataset(data, EvalTransform(preprocessing_for(cfg.data))),
        batch_size or cfg.train.eval_batch_size or cfg.train.batch_size * 2,
        data_cfg.num_workers,
        False,
    )
    scores, targets = predict(model, loader, dev, amp=dev.type == "cuda")
    ev = evaluate_scores(scores, targets, thresholds)
    return {
        "data": str(data_path),
        "skipped": dict(data.skipped),
        "metrics": ev.summary(),
        "per_class_ap": ev.ap_table(labels),
    }
