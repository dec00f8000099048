from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from model_training.config import Config, ConfigError, load_config
from model_training.optim import SAM, ModelEMA, build_scheduler
from model_training.trainer import evaluate_run, fit

from .synth import make_coco

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    return make_coco(root, 160, size=48, seed=0), make_coco(root, 60, size=48, seed=1,
                                                            name="test.json")  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco(tmp_path_factory.mktemp("small"), 48, size=32, seed=2)


def _cfg(train: Path, *overrides: str) -> Config:
    base = [
        f"data.train={train}",
        "data.image_size=48",
        "data.num_workers=0",
        "data.val_fraction=0.25",
        f"model.backbone={TINY}",
        "train.device=cpu",
        "train.progress=false",
        "train.batch_size=16",
        "head.ml_decoder.embed_dim=32",
        "head.ml_decoder.ff_dim=64",
        "head.ml_decoder.num_heads=4",
    ]
    return load_config(None, [*base, *overrides])


def test_train_reaches_high_map_and_writes_run_dir(coco: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = coco
    # Colour tags: RandAugment's colour ops and random-colour Cutout would fake or erase the
    # very evidence the labels are about, so this data set trains with flips only.
    cfg = _cfg(train, f"data.test={test}", "model.head=linear", "loss.name=aam",
               "optim.name=adamw", "optim.sam=false", "train.lr=0.01", "train.epochs=6",
               "data.augment.randaugment=false", "data.augment.cutout=0")  # fmt: skip
    run = tmp_path / "run"
    final = fit(cfg, run)
    assert final["test"]["mAP"] >= 80.0, final["test"]
    assert final["val"]["mAP"] >= 80.0, final["val"]
    for name in ["config.yaml", "labels.txt", "metrics.json", "per_class_ap.csv",
                 "thresholds.json", "curves.png", "pr_val.png", "pr_test.png", "split.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "train.log"]:  # fmt: skip
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 7))
    assert {"train_loss", "lr", "train_images_per_s", "val_mAP", "val_mAP_ema"} <= set(
        metrics["epochs"][0]
    )
    best = max(max(e["val_mAP"], e["val_mAP_ema"]) for e in metrics["epochs"])
    assert metrics["final"]["selected"]["mAP"] == pytest.approx(best)
    assert load_config(run / "config.yaml") == cfg
    rows = list(csv.DictReader((run / "per_class_ap.csv").open()))
    assert [r["label"] for r in rows] == ["red", "green", "blue", "yellow"]
    thr = json.loads((run / "thresholds.json").read_text())
    assert set(thr) == {"red", "green", "blue", "yellow"}
    assert all(0 < t <= 1 for t in thr.values())
    # evaluating the run on the test file gives the numbers fit() reported
    again = evaluate_run(run, test, device="cpu")
    assert again["metrics"]["mAP"] == pytest.approx(final["test"]["mAP"], abs=1e-6)
    assert again["metrics"]["OF1@thr"] == pytest.approx(final["test"]["OF1@thr"], abs=1e-6)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg, run)


def test_resume_equals_uninterrupted(small: Path, tmp_path: Path) -> None:
    train = small
    # The paper's recipe (SGD + SAM, OneCycle, EMA, RandAugment, Cutout) on the GCN head.
    cfg = _cfg(train, "model.head=gcn", "optim.name=sgd", "optim.sam=true", "train.lr=0.05",
               "train.epochs=3", "train.max_steps_per_epoch=2", "train.ema=true",
               "data.image_size=32", "train.early_stop_patience=null")  # fmt: skip
    full = fit(cfg, tmp_path / "full")
    part = fit(cfg, tmp_path / "resumed", stop_after_epochs=1)
    assert part == {"interrupted_at_epoch": 1}
    assert not (tmp_path / "resumed" / "metrics.json").read_text().count('"epoch": 2')
    resumed = fit(cfg, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=False)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    for key in a["ema"]["module"]:
        torch.testing.assert_close(a["ema"]["module"][key], b["ema"]["module"][key], rtol=0,
                                   atol=0)  # fmt: skip
    drop = ("train_images_per_s", "train_seconds", "val_seconds")
    strip = [{k: v for k, v in e.items() if k not in drop} for e in a["history"]]
    assert strip == [{k: v for k, v in e.items() if k not in drop} for e in b["history"]]
    assert full["val"] == resumed["val"]
    changed = load_config(None, [*(f"{k}={v}" for k, v in [("train.lr", 0.1)])])
    with pytest.raises(ConfigError, match=r"train\.lr"):
        fit(changed.model_copy(update={"data": cfg.data, "model": cfg.model}),
            tmp_path / "resumed", resume=True)  # fmt: skip


@pytest.mark.parametrize(("head", "loss"), [("ml_decoder", "aam"), ("gcn", "asl"),
                                            ("linear", "bce")])  # fmt: skip
def test_every_head_and_loss_trains(small: Path, tmp_path: Path, head: str, loss: str) -> None:
    train = small
    cfg = _cfg(train, f"model.head={head}", f"loss.name={loss}", "train.epochs=1",
               "train.max_steps_per_epoch=2", "data.image_size=32", "optim.name=adamw",
               "train.lr=0.001")  # fmt: skip
    final = fit(cfg, tmp_path / "run")
    assert 0 <= final["val"]["mAP"] <= 100


def test_sam_uses_gradient_at_the_perturbed_point() -> None:
    # f(w) = sum(w^4): the SAM gradient is 4 (w + rho g/|g|)^3, not 4 w^3.
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    sam = SAM(opt, rho=0.5)
    (w**4).sum().backward()
    g = w.grad.clone()  # type: ignore[union-attr]
    assert sam.perturb()
    e = 0.5 * g / g.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0]) + e)
    opt.zero_grad()
    (w**4).sum().backward()
    sam.restore()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0]))
    opt.step()
    expected = torch.tensor([1.0, -2.0]) - 0.1 * 4 * (torch.tensor([1.0, -2.0]) + e) ** 3
    torch.testing.assert_close(w.detach(), expected)
    w.grad = torch.tensor([float("nan"), 1.0])
    assert not sam.perturb()  # non-finite (e.g. AMP overflow): no move


def test_onecycle_per_iteration() -> None:
    cfg = Config().optim
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg, lr=0.01, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01 / 100)
    assert max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert int(torch.tensor(lrs).argmax()) in range(18, 22)  # warm-up 20%
    assert lrs[-1] == pytest.approx(0.01 / 1e5, rel=0.2)


def test_ema_tracks_weights() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # effective decay min(0.5, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 1 - d))


def test_non_finite_loss_raises_without_amp() -> None:
    from model_training.engine import StepContext, train_one_epoch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = StepContext(
        model=model,
        loss_fn=lambda out, y: (out * float("nan")).sum(),
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        device=torch.device("cpu"),
        amp=False,
    )
    batches = [(torch.randn(4, 3), torch.zeros(4, 2))] * 3
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_one_epoch(ctx, batches)


def test_early_stopping_on_val_map_and_resume_respects_it(small: Path, tmp_path: Path) -> None:
    # lr ~ 0 and no EMA: val mAP stalls (only BatchNorm statistics still move) -> early stop
    cfg = _cfg(small, "model.head=linear", "optim.name=adamw", "optim.sam=false",
               "optim.scheduler=constant", "train.lr=1e-12", "train.ema=false",
               "train.epochs=8", "train.max_steps_per_epoch=1", "train.early_stop_patience=2",
               "data.image_size=32")  # fmt: skip
    run = tmp_path / "run"
    final = fit(cfg, run)
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    assert final["stopped_early"] is True
    assert final["epochs_run"] == len(history) < 8
    best, streak, streaks = -1.0, 0, []
    for e in history:
        streak = 0 if e["val_mAP"] > best + 1e-9 else streak + 1
        best = max(best, e["val_mAP"])
        streaks.append(streak)
    assert streaks[-1] == 2  # stopped exactly when the patience ran out...
    assert max(streaks[:-1]) < 2  # ...and not before
    assert final["selected"]["mAP"] == pytest.approx(best)
    again = fit(cfg, run, resume=True)  # a stopped run stays stopped
    assert again["epochs_run"] == len(history)


@pytest.mark.slow
def test_cpu_small_config_with_pretrained_lite0(tmp_path: Path) -> None:
    # The shipped CPU config as a newcomer would run it (pretrained EfficientNet-Lite0 from the
    # offline package, ML-Decoder head, AAM), at 96 px and 3 epochs to stay within minutes.
    data = tmp_path / "data"
    train = make_coco(data, 200, size=64, seed=0)
    test = make_coco(data, 80, size=64, seed=1, name="test.json")
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "cpu_small.yaml",
                      [f"data.train={train}", f"data.test={test}", "data.image_size=96",
                       "data.num_workers=0", "train.epochs=3", "train.progress=false",
                       "data.augment.randaugment=false", "data.augment.cutout=0"])  # fmt: skip
    final = fit(cfg, tmp_path / "run")
    assert final["test"]["mAP"] >= 85.0, final["test"]


def test_channels_last_trains_the_same_model(small: Path, tmp_path: Path) -> None:
    """NHWC memory format is a speed choice only: same losses and weights as NCHW."""
    base = ("model.head=ml_decoder", "train.epochs=1", "train.max_steps_per_epoch=3",
            "data.image_size=32", "train.ema=false", "data.augment.randaugment=false")  # fmt: skip
    runs = {}
    for flag in ("true", "false"):
        fit(_cfg(small, *base, f"train.channels_last={flag}"), tmp_path / flag)
        runs[flag] = torch.load(tmp_path / flag / "checkpoints/last.pt", weights_only=False)
    nhwc, nchw = runs["true"], runs["false"]
    for key in nchw["model"]:
        torch.testing.assert_close(nhwc["model"][key], nchw["model"][key], rtol=1e-3, atol=1e-4,
                                   msg=key)  # fmt: skip
    loss = [e["train_loss"] for e in nhwc["history"]], [e["train_loss"] for e in nchw["history"]]
    assert loss[0] == pytest.approx(loss[1], rel=1e-4)


def test_frozen_regime_trains_the_head_only_and_finishes_like_full(
    coco: tuple[Path, Path], tmp_path: Path
) -> None:
    """train.regime=frozen: backbone weights untouched, head trained on cached feature maps,
    then the usual selection, thresholds, test evaluation and a loadable best.pt."""
    from model_training.frozen import feature_batches
    from model_training.models import build_model
    from model_training.rundir import load_trained

    train, test = coco
    cfg = _cfg(train, f"data.test={test}", "model.head=ml_decoder", "loss.name=asl",
               "optim.name=adamw", "optim.sam=false", "train.lr=0.01", "train.epochs=4",
               "train.regime=frozen", "train.ema=true")  # fmt: skip
    torch.manual_seed(0)
    initial = build_model(cfg, ["x"] * 4).backbone.state_dict()  # random init, same seed path
    final = fit(cfg, tmp_path / "run")
    assert final["test"]["mAP"] > 30.0, final["test"]  # random frozen backbone: above chance
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 4
    log = (tmp_path / "run" / "train.log").read_text()
    assert "frozen regime: cached" in log
    _, _, _, thresholds = load_trained(tmp_path / "run")
    assert thresholds is not None
    ckpt = torch.load(tmp_path / "run" / "checkpoints/last.pt", weights_only=False)
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"][0]
    assert first["train_images_per_s"] > 0
    # the backbone in the checkpoint is the one the run started from (never trained)
    start = {
        k[len("backbone.") :]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")
    }
    assert start.keys() == initial.keys()
    trained_head = {k: v for k, v in ckpt["model"].items() if k.startswith("head.")}
    assert trained_head
    # the batches: one view per image, every step full
    feats, y = torch.randn(10, 2, 3, 2, 2), torch.ones(10, 4)
    batches = list(feature_batches(feats, y, 4, 2, torch.Generator().manual_seed(0)))
    assert [b[0].shape for b in batches] == [torch.Size([4, 3, 2, 2])] * 2


def test_frozen_regime_keeps_the_backbone(small: Path, tmp_path: Path) -> None:
    cfg = _cfg(small, "model.head=linear", "train.epochs=1", "train.regime=frozen",
               "train.ema=false", "optim.sam=false")  # fmt: skip
    torch.manual_seed(0)
    fit(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoints/last.pt", weights_only=False)
    torch.manual_seed(0)
    cfg_full = _cfg(small, "model.head=linear", "train.epochs=1", "train.ema=false",
                    "optim.sam=false")  # fmt: skip
    fit(cfg_full, tmp_path / "full")
    full = torch.load(tmp_path / "full" / "checkpoints/last.pt", weights_only=False)
    from model_training.models import build_model

    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg, list(ckpt["labels"])).state_dict()
    frozen_moved = [k for k in fresh if k.startswith("backbone.") and "num_batches" not in k
                    and not torch.equal(fresh[k], ckpt["model"][k])]  # fmt: skip
    full_moved = [k for k in fresh if k.startswith("backbone.") and "num_batches" not in k
                  and not torch.equal(fresh[k], full["model"][k])]  # fmt: skip
    assert not frozen_moved, frozen_moved[:3]
    assert full_moved  # the full regime does train the backbone


def test_split_backbone_composes_to_the_backbone() -> None:
    """rest(prefix(x)) is the backbone's own forward, for every cut; bad cuts are config errors."""
    from torch import nn

    from model_training.frozen import split_backbone
    from model_training.models.backbone import Backbone

    torch.manual_seed(0)
    backbone = Backbone(TINY).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = backbone(x)
        for stages in range(len(backbone.body.blocks) + 1):
            prefix, rest = split_backbone(backbone, stages)
            assert torch.allclose(rest(prefix(x)), want, atol=1e-5), stages
    with pytest.raises(ConfigError, match="the backbone has 5"):
        split_backbone(backbone, 6)
    not_staged = nn.Module()
    not_staged.body = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="EfficientNet-family"):
        split_backbone(not_staged, 1)


def test_partial_regime_trains_the_last_stages_only(small: Path, tmp_path: Path) -> None:
    """train.regime=partial: the cached stages keep their weights (and batch-norm statistics),
    the last `trainable_stages`, the final conv and the head train; the run finishes as usual."""
    from model_training.models import build_model

    cfg = _cfg(small, "model.head=linear", "train.epochs=2", "train.regime=partial",
               "train.trainable_stages=2", "train.ema=true", "optim.sam=false",
               "train.lr=0.01")  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg, ["x"] * 4).state_dict()
    final = fit(cfg, tmp_path / "run")
    assert "val" in final
    assert "partial regime: cached" in (tmp_path / "run" / "train.log").read_text()
    ckpt = torch.load(tmp_path / "run" / "checkpoints/last.pt", weights_only=False)["model"]
    moved = {k for k in fresh if "num_batches" not in k and not torch.equal(fresh[k], ckpt[k])}
    frozen = ("backbone.body.conv_stem.", "backbone.body.bn1.", "backbone.body.blocks.0.",
              "backbone.body.blocks.1.", "backbone.body.blocks.2.")  # fmt: skip
    trained = ("backbone.body.blocks.3.", "backbone.body.blocks.4.", "backbone.body.conv_head.",
               "backbone.body.bn2.", "head.")  # fmt: skip
    assert not [k for k in moved if k.startswith(frozen)]
    for part in trained:
        assert any(k.startswith(part) for k in moved), part
