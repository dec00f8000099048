"""Typed, nested training configuration: data / model / head / loss / optim / train / export.

A config is a YAML file validated into `Config` (unknown keys are rejected with their dotted
path, so typos fail loudly) plus `--set a.b=c` overrides whose values are parsed as YAML
scalars (`--set train.epochs=3`, `--set data.mean=[0.5,0.5,0.5]`). Every run directory gets
the resolved config (`config.yaml`), which alone is enough to rebuild the model.

The key names `data.format`, `data.train`, `data.val`, `data.test`, `data.images_root`,
`data.image_size`, `model.backbone`, `model.pretrained`, `model.head`, `loss.name`,
`train.epochs`, `train.batch_size`, `train.lr`, `train.device`, `train.seed` are the public,
scripted interface: keep them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    """Training-time augmentation (docs/method.md#training-recipe). Evaluation only resizes and
    normalises."""

    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    randaugment: bool = True
    randaugment_ops: int = Field(2, ge=0, description="RandAugment: ops per image")
    randaugment_magnitude: int = Field(9, ge=0, le=30, description="RandAugment magnitude")
    cutout: float = Field(0.5, ge=0, le=1, description="probability of one Cutout box")
    cutout_size: float = Field(0.4, gt=0, le=1, description="box side as a fraction of H and W")


class DataConfig(_Section):
    format: Literal["coco", "voc", "csv", "jsonl"] = "coco"
    train: str = Field(
        "", description="training annotations (COCO json / VOC ImageSets txt / CSV / JSONL)"
    )
    val: str | None = Field(
        None, description="validation annotations; None: hold out `val_fraction` of train"
    )
    test: str | None = Field(None, description="test annotations, evaluated once at the end")
    images_root: str | None = Field(
        None,
        description="directory image paths are relative to "
        "(default: the annotation file's directory; VOC: "
        "<root>/JPEGImages)",
    )
    val_images_root: str | None = Field(
        None, description="images_root for data.val (default: data.images_root)"
    )
    test_images_root: str | None = Field(
        None, description="images_root for data.test (default: data.images_root)"
    )
    image_size: int = Field(224, gt=0, description="square input side; resize, no crop")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    labels: list[str] | None = Field(
        None,
        description="explicit label list and order (default:"
        " COCO category order / sorted names from train)",
    )
    label_sep: str = Field(";", min_length=1, description="CSV: separator inside the labels field")
    empty_labels: Literal["keep", "drop", "error"] = Field(
        "keep",
        description="images with no label: keep (negatives for every label), drop (counted), "
        "or error",
    )
    voc_difficult: Literal["ignore", "positive", "negative"] = Field(
        "ignore",
        description="VOC objects marked difficult: ignore (target -1, the VOC "
        "evaluation convention) unless a non-difficult object of the class is present",
    )
    hierarchy: str | None = Field(
        None,
        description="label hierarchy JSON (parents, aliases, category per label) for the "
        "manifest (default: hierarchy.json beside data.train; COCO: supercategories)",
    )
    skip_bad: bool = Field(False, description="skip and count bad records instead of failing")
    verify_images: bool = Field(
        False, description="decode every image up front (finds unreadable files before training)"
    )
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_workers: int = Field(2, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class ModelConfig(_Section):
    backbone: str = Field("efficientnet_lite0", description="any timm model name")
    pretrained: bool | str = Field(
        False,
        description="false; true (offline package for efficientnet_lite0, else timm hub);"
        " 'hub'; or a path to a local checkpoint (state dict)",
    )
    head: str = Field("ml_decoder", description="linear | ml_decoder | gcn")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="dropout before the head (linear)")


class LinearHeadConfig(_Section):
    cosine: Literal["auto"] | bool = Field("auto", description="auto: cosine with loss aam")


class MLDecoderHeadConfig(_Section):
    num_queries: int = Field(100, gt=0, description="Q = min(C, num_queries)")
    embed_dim: int = Field(768, gt=0)
    num_heads: int = Field(8, gt=0)
    ff_dim: int = Field(2048, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)


class GCNHeadConfig(_Section):
    embeddings: str | None = Field(
        None,
        description="label embedding file (.npy [C,d] in label order, or JSON "
        "{label: [floats]}); None: built-in one-hot fallback",
    )
    tau: float = Field(0.4, ge=0, le=1, description="co-occurrence binarisation threshold")
    rho: float = Field(0.25, ge=0, description="neighbour re-weighting")
    hidden_dim: int | None = Field(None, description="first GCN layer width (default: D)")


class HeadConfig(_Section):
    linear: LinearHeadConfig = Field(default_factory=LinearHeadConfig)
    ml_decoder: MLDecoderHeadConfig = Field(default_factory=MLDecoderHeadConfig)
    gcn: GCNHeadConfig = Field(default_factory=GCNHeadConfig)


class AAMLossConfig(_Section):
    s: float = Field(23.0, gt=0, description="scale")
    m: float = Field(0.0, ge=0, description="angular margin")
    k: float = Field(0.7, ge=0, le=1, description="positive/negative balance")
    gamma_pos: float = Field(0.0, ge=0)
    gamma_neg: float = Field(0.0, ge=0)
    clip: float = Field(0.05, ge=0, le=1, description="probability shift (used when focusing)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ASLLossConfig(_Section):
    gamma_pos: float = Field(0.0, ge=0)
    gamma_neg: float = Field(4.0, ge=0)
    clip: float = Field(0.05, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class BCELossConfig(_Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class LossConfig(_Section):
    name: str = Field("aam", description="aam | asl | bce")
    reduction: Literal["sum", "mean"] = "sum"
    aam: AAMLossConfig = Field(default_factory=AAMLossConfig)
    asl: ASLLossConfig = Field(default_factory=ASLLossConfig)
    bce: BCELossConfig = Field(default_factory=BCELossConfig)


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    sam: bool = True
    sam_rho: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(5e-4, ge=0)
    no_decay_bias_norm: bool = Field(
        True, description="no weight decay on biases, norms, 1-d params and queries"
    )
    scheduler: Literal["onecycle", "constant"] = "onecycle"
    warmup_pct: float = Field(0.2, gt=0, lt=1)
    start_div: float = Field(100.0, ge=1, description="start lr = lr / start_div")
    end_div: float = Field(1e5, ge=1, description="final lr = lr / end_div")
    grad_clip: float | None = Field(None, gt=0)


class TrainConfig(_Section):
    epochs: int = Field(40, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int | None = Field(
        None, description="batch size of evaluation passes; None: 2 x batch_size"
    )
    lr: float = Field(0.005, gt=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = 0
    amp: bool | Literal["auto"] = Field(
        "auto",
        description="autocast; auto: on for CUDA; true: on any device (a CPU needs amp_dtype "
        "bfloat16; it pays for the whole network on CPUs with AVX-512 BF16 or AMX, not for the "
        "partial regime: benchmarks/RESULTS.md"
        "#training-step-speed-by-regime-bf16-and-resolution-benchmarkstrain_speedpy)",
    )
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        "float16", description="autocast dtype; float16 uses a GradScaler, bfloat16 needs none"
    )
    channels_last: bool = Field(
        True,
        description="NHWC memory format for model and batches: faster training on CPU"
        " (benchmarks/RESULTS.md#channels_last-training) and the usual choice for CUDA AMP",
    )
    ema: bool = True
    ema_decay: float = Field(0.9993, ge=0, lt=1)
    early_stop_patience: int | None = Field(5, description="epochs without val mAP gain; None: off")
    max_steps_per_epoch: int | None = Field(None, gt=0, description="cap (smoke tests)")
    threshold_floor: float | Literal["auto"] = Field(
        0.1,
        description="lowest calibrated per-label threshold (labels with few val positives "
        "otherwise get near-0 thresholds that fire on most images); auto: of 0.1, 0.2, 0.3, "
        "0.4, 0.5 the one with the best pooled F1 (OF1) on val",
    )
    regime: Literal["full", "frozen", "partial"] = Field(
        "full",
        description="full: train the whole network; frozen: keep the pretrained backbone, cache "
        "its feature maps once (image + mirror) and train the head only; partial: cache the "
        "output of all but the last trainable_stages stages, train the rest (CPU budget)",
    )
    trainable_stages: int = Field(
        2,
        ge=1,
        description="regime partial: the backbone's last stages that train (EfficientNet "
        "family: 7 stages; 2 = the 7x7 stages at 224 px, with the final conv and the head)",
    )
    progressive_sizes: list[int] = Field(
        default_factory=list,
        description="regime full: smaller training sizes for the first epochs, e.g. [160, 192]:"
        " the epochs split into equal phases at these sizes and then data.image_size (the "
        "size validation, test and export use); empty: data.image_size throughout",
    )
    calibrate: str = Field(
        "f1",
        description="per-label thresholds on val: 'f1' (F1-optimal) or 'precision:P' (lowest "
        "threshold with precision >= P, F1-optimal where P is unreachable)",
    )
    progress: bool = True

    @field_validator("threshold_floor")
    @classmethod
    def _floor_in_range(cls, v: float | str) -> float | str:
        if v != "auto" and not 0.0 <= float(v) <= 1.0:
            raise ValueError("threshold_floor must be 'auto' or between 0 and 1")
        return v

    @field_validator("progressive_sizes")
    @classmethod
    def _sizes_in_range(cls, v: list[int]) -> list[int]:
        if any(size < 32 for size in v):
            raise ValueError("progressive_sizes must be at least 32 px")
        return v

    def size_at(self, epoch: int, final: int) -> int:
        """The training image size of `epoch` (0-based) under `progressive_sizes`."""
        sizes = [*self.progressive_sizes, final]
        return sizes[min(epoch * len(sizes) // self.epochs, len(sizes) - 1)]

    @field_validator("calibrate")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from .calibration import parse_rule

        return str(parse_rule(v))

    def eval_batch(self) -> int:
        """The batch size of every evaluation pass: `eval_batch_size`, else twice
        `batch_size` (no gradients are kept, so twice the images fit)."""
        return self.eval_batch_size or self.batch_size * 2


class ExportConfig(_Section):
    name: str = "mltag-model"
    version: str = "0.1.0"
    opset: int = 17
    thresholds: Literal["calibrated", "fixed"] = "calibrated"


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _progressive_fits(self) -> Config:
        sizes = self.train.progressive_sizes
        if sizes and self.train.regime != "full":
            raise ValueError("train.progressive_sizes applies to train.regime=full only")
        if any(size >= self.data.image_size for size in sizes):
            raise ValueError(f"train.progressive_sizes must be below data.image_size "
                             f"({self.data.image_size})")  # fmt: skip
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like a.b=value")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a nested dict (in place and returned)."""
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def _format_errors(e: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or start from defaults when `path` is None) and apply overrides.

    Relative data paths are used as given, i.e. relative to the working directory.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        data = loaded
    overrides = list(overrides)
    apply_overrides(data, overrides)
    if overrides:
        source += " + " + " ".join(overrides)
    return config_from_dict(data, source)


def reference_yaml() -> str:
    """Every key with its default and description, as commented YAML (configs/defaults.yaml)."""
    lines = [
        "# Every training config key with its default (generated by",
        "# `python -m model_training.config > configs/defaults.yaml`; a test keeps it in sync).",
        "# A config file only needs the keys it changes; `--set a.b=c` overrides any of them.",
    ]

    def emit(model: type[BaseModel], instance: BaseModel, indent: int) -> None:
        pad = "  " * indent
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                if field.description:
                    lines.append(f"{pad}# {field.description}")
                lines.append(f"{pad}{name}:")
                emit(type(value), value, indent + 1)
                continue
            dumped = yaml.safe_dump(
                instance.model_dump(mode="json")[name], default_flow_style=True, width=1000
            ).strip()
            dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
            comment = f"  # {field.description}" if field.description else ""
            lines.append(f"{pad}{name}: {dumped}{comment}")

    emit(Config, Config(), 0)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_yaml(), end="")
