"""The training run: data -> model -> epochs (train, validate raw and EMA, keep the better,
early stopping, checkpoint) -> calibrated thresholds -> one test evaluation. What goes where in
the run directory is `rundir.py`'s business; what a checkpoint holds is `train_state.py`'s.

Reproducibility: every epoch reseeds python/numpy/torch from (seed, epoch, rank) and the data
order from (seed, epoch), so a run resumed from `last.pt` repeats exactly what an uninterrupted
run would have done. The test split is evaluated once, after training, with the checkpoint and
thresholds chosen on validation.

Distributed: see `distributed.py`; rank 0 validates, writes files and decides early stopping.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import plots
from .calibration import calibrate_with_floor, describe, parse_rule
from .config import Config, ConfigError
from .data import LabelledSet, Splits, load_splits, read_annotations
from .data.dataset import MultilabelDataset
from .data.loaders import eval_loader, train_loader
from .data.transforms import TrainTransform, preprocessing_for
from .distributed import (
    Dist,
    decision_of_rank0,
    init_distributed,
    leave,
    resolve_device,
    wrap_model,
)
from .engine import StepContext, predict, train_one_epoch
from .frozen import CachedRegime
from .losses import build_loss
from .metrics import evaluate_scores
from .models import build_model
from .optim import SAM
from .rundir import RunDir, TrainLog, load_trained
from .train_state import TrainState


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Compute:
    """Where and how tensors run: device, autocast and memory format."""

    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    channels_last: bool

    @classmethod
    def for_config(cls, cfg: Config, local_rank: int = 0) -> Compute:
        device = resolve_device(cfg.train.device, local_rank)
        amp = cfg.train.amp is True or (cfg.train.amp == "auto" and device.type == "cuda")
        dtype = torch.bfloat16 if cfg.train.amp_dtype == "bfloat16" else torch.float16
        if amp and device.type == "cpu" and dtype != torch.bfloat16:
            raise ConfigError(
                "train.amp=true on a CPU autocasts to bfloat16 only: set "
                "train.amp_dtype=bfloat16 (float16 on a CPU is slower than float32)"
            )
        return cls(device, amp, dtype, cfg.train.channels_last)


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
    dist = init_distributed(cfg.train.device)
    compute = Compute.for_config(cfg, dist.local_rank)
    run = RunDir(output)
    if dist.main:
        run.create()
    run.check_start(resume)
    log = TrainLog(run.log if dist.main else None)
    saved = run.load_last() if resume else None
    if saved is not None:
        _check_resume_config(cfg, saved["config"])
    seed_everything(cfg.train.seed)
    splits = load_splits(cfg.data, seed=cfg.train.seed)
    if dist.main:
        run.write_inputs(cfg, splits.train.labels, splits.val.images)
        _log_start(log, splits, compute, dist)
    training = _Training(cfg, run, dist, compute, log, splits, saved)
    interrupted_at = training.run_epochs(stop_after_epochs)
    if interrupted_at is not None:
        return {"interrupted_at_epoch": interrupted_at}
    final: dict[str, Any] = {}
    if dist.main:
        final = _finish(cfg, run, splits, training.state, compute, log)
    leave(dist)
    return final


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


def _log_start(log: TrainLog, splits: Splits, compute: Compute, dist: Dist) -> None:
    log(f"train: {splits.train.describe()}")
    log(f"val:   {splits.val.describe()}")
    if splits.test is not None:
        log(f"test:  {splits.test.describe()}")
    amp = f" (AMP {str(compute.amp_dtype).removeprefix('torch.')})" if compute.amp else ""
    log(f"device: {compute.device}{amp}, processes: {dist.world}")


def _progress(enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def wrap(it: Iterable[object]) -> Any:
        return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, unit="batch")

    return wrap


class _Training:
    """One process's share of a run: its loaders, the train state, the training step and the
    epoch loop (validation, checkpoints and the early-stopping decision on rank 0)."""

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        dist: Dist,
        compute: Compute,
        log: TrainLog,
        splits: Splits,
        saved: dict[str, Any] | None,
    ) -> None:
        self.cfg, self.run, self.dist, self.compute, self.log = cfg, run, dist, compute, log
        self.labels = splits.train.labels
        prep = preprocessing_for(cfg.data)
        pin = compute.device.type == "cuda"
        self.generator = torch.Generator()
        self.train_loader, self.sampler = train_loader(
            splits.train, prep, cfg, self.generator, dist.world, dist.rank, pin
        )
        self.val_loader = eval_loader(
            splits.val, prep, cfg.train.eval_batch(), cfg.data.num_workers, pin
        )
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, self.labels, train_targets=splits.train.targets)
        model = model.to(compute.device)
        if compute.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if saved is not None:
            model.load_state_dict(saved["model"])
        self.state, self.step = self._state_and_step(model, saved)
        self.cached: CachedRegime | None = None
        if cfg.train.regime != "full":
            if dist.world > 1:
                raise ConfigError(
                    f"train.regime={cfg.train.regime} runs in one process (no torchrun)"
                )
            self.cached = CachedRegime(self, splits.train, splits.val)

    def _state_and_step(
        self, model: nn.Module, saved: dict[str, Any] | None
    ) -> tuple[TrainState, StepContext]:
        cfg, compute = self.cfg, self.compute
        ddp_model = wrap_model(model, self.dist, compute.device)
        loss_params = getattr(cfg.loss, cfg.loss.name, None)
        params = loss_params.model_dump() if loss_params is not None else {}
        loss_fn = build_loss(cfg.loss.name, cfg.loss.reduction, **params)
        steps_per_epoch = len(self.train_loader)
        if cfg.train.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
        fp16_scaler = compute.amp and compute.amp_dtype == torch.float16
        state = TrainState.create(model, cfg, steps_per_epoch * cfg.train.epochs, fp16_scaler)
        if saved is not None:
            state.restore(saved, cfg.train.epochs)
            self.log(f"resumed from {self.run.last} at epoch {state.epoch}")
        step = StepContext(
            model=ddp_model,
            loss_fn=loss_fn,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            scaler=state.scaler,
            device=compute.device,
            amp=compute.amp,
            sam=SAM(state.optimizer, cfg.optim.sam_rho) if cfg.optim.sam else None,
            ema=state.ema,
            ema_source=model,
            grad_clip=cfg.optim.grad_clip,
            amp_dtype=compute.amp_dtype,
            channels_last=compute.channels_last,
        )
        return state, step

    def run_epochs(self, stop_after: int | None = None) -> int | None:
        """Train up to the last epoch or early stopping. With `stop_after`, end after that
        many epochs as an interruption would: returns the epoch it stopped at (else None)."""
        start = self.state.epoch
        for epoch in range(start, self.cfg.train.epochs):
            if stop_after is not None and epoch - start >= stop_after:
                return epoch
            record = self._train_epoch(epoch)
            stop = self._validate(record) if self.dist.main else False
            if decision_of_rank0(stop, self.dist):
                self.state.stopped_early = True
                patience = self.cfg.train.early_stop_patience
                self.log(f"early stopping: no val mAP gain for {patience} epochs")
                break
        return None

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, dist = self.cfg, self.dist
        seed_everything(cfg.train.seed * 100_003 + epoch * 1_009 + dist.rank)
        self.generator.manual_seed(cfg.train.seed * 7_919 + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        progress = _progress(
            cfg.train.progress and dist.main, f"epoch {epoch + 1}/{cfg.train.epochs}"
        )
        if self.cached is not None:
            stats = self.cached.epoch(self, cfg.train.seed * 7_919 + epoch)
        else:
            self._resize_for(epoch)
            stats = train_one_epoch(
                self.step, self.train_loader, cfg.train.max_steps_per_epoch, progress
            )
        self.state.epoch = epoch + 1
        return {
            "epoch": epoch + 1,
            "train_loss": stats.loss,
            "lr": stats.lr,
            "train_images_per_s": stats.throughput * dist.world,
            "train_seconds": stats.seconds,
        }

    def _resize_for(self, epoch: int) -> None:
        """Progressive resizing: the training transform's size for this epoch. The loader's
        workers start afresh each epoch (not persistent), so they pick the new transform up."""
        cfg = self.cfg
        if not cfg.train.progressive_sizes:
            return
        size = cfg.train.size_at(epoch, cfg.data.image_size)
        dataset: MultilabelDataset = self.train_loader.dataset  # type: ignore[assignment]
        if dataset.transform.prep.height != size:  # type: ignore[attr-defined]
            prep = preprocessing_for(cfg.data).model_copy(update={"height": size, "width": size})
            dataset.transform = TrainTransform(prep, cfg.data.augment)
            self.log(f"epoch {epoch + 1}: training at {size}x{size}")

    def _validate(self, record: dict[str, Any]) -> bool:
        """Rank 0 after an epoch: validation mAP of the raw and the EMA weights, the best ones
        kept, checkpoints and metrics written. True when the patience has run out."""
        state, compute = self.state, self.compute
        t0 = time.perf_counter()

        def val_map(model: nn.Module) -> float:
            if self.cached is not None:
                return self.cached.val_map(model)  # type: ignore[arg-type]
            scores, targets = predict(model, self.val_loader, compute.device, compute.amp,
                                      compute.amp_dtype, compute.channels_last)  # fmt: skip
            return evaluate_scores(scores, targets).mAP

        record["val_mAP"] = val_map(state.model)
        record["val_mAP_ema"] = val_map(state.ema.module) if state.ema is not None else None
        record["val_seconds"] = time.perf_counter() - t0
        if state.observe(record):
            self.run.save_best(state.best_checkpoint(self.cfg, self.labels))
        self._log_epoch(record)
        patience = self.cfg.train.early_stop_patience
        state.stopped_early = patience is not None and state.bad_epochs >= patience
        self.run.save_last(state.checkpoint(self.cfg, self.labels))
        self.run.write_metrics(state.history, None)
        return state.stopped_early

    def _log_epoch(self, record: dict[str, Any]) -> None:
        best = self.state.best
        ema = record["val_mAP_ema"]
        self.log(
            f"epoch {record['epoch']}/{self.cfg.train.epochs}: loss {record['train_loss']:.4f} "
            f"lr {record['lr']:.2e} {record['train_images_per_s']:.1f} img/s | val mAP raw "
            f"{record['val_mAP']:.2f}{f' ema {ema:.2f}' if ema is not None else ''} | best "
            f"{best['mAP']:.2f} ({best['source']}, epoch {best['epoch']})"
        )


def _finish(
    cfg: Config, run: RunDir, splits: Splits, state: TrainState, compute: Compute, log: TrainLog
) -> dict[str, Any]:
    """Rank 0 after the last epoch: the selected weights, reloaded from best.pt, get per-label
    thresholds calibrated on validation and one evaluation on test; reports are written."""
    model, _, labels, _ = load_trained(run.root, compute.device)
    scores_of = _scorer(cfg, model, compute)
    final: dict[str, Any] = {
        "selected": state.best,
        "stopped_early": state.stopped_early,
        "epochs_run": len(state.history),
    }
    final.update(_calibrate_and_test(cfg, run, splits, labels, scores_of))
    if state.history:
        plots.plot_curves(state.history, run.curves)
    run.write_metrics(state.history, final)
    msg = f"selected {state.best['source']} weights of epoch {state.best['epoch']}: val mAP "
    msg += f"{final['val']['mAP']:.2f}"
    msg += f", test mAP {final['test']['mAP']:.2f}" if "test" in final else ""
    log(msg)
    return final


Scorer = Callable[[LabelledSet], tuple[np.ndarray, np.ndarray]]


def _scorer(cfg: Config, model: nn.Module, compute: Compute) -> Scorer:
    prep = preprocessing_for(cfg.data)

    def scores_of(data: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
        loader = eval_loader(data, prep, cfg.train.eval_batch(), cfg.data.num_workers)
        return predict(model, loader, compute.device, compute.amp, compute.amp_dtype)

    return scores_of


def _calibrate_and_test(
    cfg: Config, run: RunDir, splits: Splits, labels: list[str], scores_of: Scorer
) -> dict[str, Any]:
    """Thresholds by `cfg.train.calibrate` on val (written to thresholds.json), one test
    evaluation, PR curves and the per-class table; returns metrics.json's val/test/calibration."""
    s_val, y_val = scores_of(splits.val)
    rule = parse_rule(cfg.train.calibrate)
    thresholds, reached, floor = calibrate_with_floor(s_val, y_val, rule, cfg.train.threshold_floor)
    run.write_thresholds(labels, thresholds)
    val_eval = evaluate_scores(s_val, y_val, thresholds)
    out: dict[str, Any] = {
        "ap_policy": "classes without positives are skipped in mAP",
        "val": val_eval.summary(),
        "val_note": "@thr metrics on val are optimistic: the thresholds were fitted on it",
        "calibration": describe(rule, labels, reached, floor=floor),
    }
    test_ap = None
    if splits.test is not None:
        s_test, y_test = scores_of(splits.test)
        test_eval = evaluate_scores(s_test, y_test, thresholds)
        out["test"] = test_eval.summary()
        out["calibration"] = describe(
            rule, labels, reached, (s_test, y_test, thresholds), floor=floor
        )
        test_ap = test_eval.per_class_ap
        plots.plot_pr_curves(s_test, y_test, labels, run.pr_curves("test"), "test")
    plots.plot_pr_curves(s_val, y_val, labels, run.pr_curves("val"), "validation")
    train_positives = (splits.train.targets > 0).sum(axis=0)
    run.write_per_class(labels, train_positives, val_eval.per_class_ap, test_ap, thresholds)
    return out


def recalibrate_run(
    run_dir: str | Path, rule: str, device: str = "auto", floor: float | str | None = None
) -> dict[str, Any]:
    """Choose a finished run's thresholds again by `rule` (`f1`, `precision:0.8`) and, when
    given, `floor` (a number or `auto`) without training: thresholds.json, the per-class table
    and metrics.json's val/test/calibration are rewritten, as if the run had been trained with
    `train.calibrate=rule` (and `train.threshold_floor=floor`)."""
    run = RunDir(run_dir)
    if not run.metrics.is_file():
        raise FileNotFoundError(f"{run.root} has no metrics.json: not a finished run")
    model, cfg, labels, _ = load_trained(run.root, resolve_device(device))
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={
                    "calibrate": str(parse_rule(rule)),
                    "device": device,
                    "threshold_floor": cfg.train.threshold_floor if floor is None else floor,
                }
            )
        }
    )
    compute = Compute.for_config(cfg)
    splits = load_splits(cfg.data, seed=cfg.train.seed)
    doc = json.loads(run.metrics.read_text(encoding="utf-8"))
    final = {**(doc.get("final") or {})}
    final.update(_calibrate_and_test(cfg, run, splits, labels, _scorer(cfg, model, compute)))
    run.write_metrics(doc.get("epochs") or [], final)
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
    batch = batch_size or cfg.train.eval_batch()
    loader = eval_loader(data, preprocessing_for(cfg.data), batch, data_cfg.num_workers)
    scores, targets = predict(model, loader, dev, amp=dev.type == "cuda")
    ev = evaluate_scores(scores, targets, thresholds)
    return {
        "data": str(data_path),
        "skipped": dict(data.skipped),
        "metrics": ev.summary(),
        "per_class_ap": ev.ap_table(labels),
    }
