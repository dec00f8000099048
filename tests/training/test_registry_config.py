from __future__ import annotations

from pathlib import Path

import pytest

from model_training.config import Config, ConfigError, load_config
from model_training.registry import Registry

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_registry_duplicate_and_unknown() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)

    @reg.register("b")
    def _b() -> int:
        return 2

    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 3)
    with pytest.raises(KeyError, match="valid names: a, b"):
        reg.get("c")


def test_public_key_names_exist() -> None:
    cfg = Config()
    dumped = cfg.to_dict()
    for key in [
        "data.format", "data.train", "data.val", "data.test", "data.images_root",
        "data.image_size", "model.backbone", "model.pretrained", "model.head", "loss.name",
        "train.epochs", "train.batch_size", "train.lr", "train.device", "train.seed",
    ]:  # fmt: skip
        node = dumped
        for part in key.split("."):
            assert part in node, key
            node = node[part]


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  format: csv\n  image_size: 64\ntrain:\n  epochs: 3\n")
    cfg = load_config(p, ["train.epochs=5", "data.mean=[0.1,0.2,0.3]", "model.pretrained=false"])
    assert cfg.data.format == "csv"
    assert cfg.data.image_size == 64
    assert cfg.train.epochs == 5
    assert cfg.data.mean == pytest.approx((0.1, 0.2, 0.3))
    assert cfg.model.pretrained is False
    # round trip through the resolved YAML
    out = tmp_path / "resolved.yaml"
    cfg.save(out)
    assert load_config(out) == cfg


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_config(None, ["train.epochz=3"])
    with pytest.raises(ConfigError, match=r"data\.format"):
        load_config(None, ["data.format=xml"])
    with pytest.raises(ConfigError, match=r"a\.b=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.head in {"linear", "ml_decoder", "gcn"}


def test_shipped_configs_present() -> None:
    names = {p.name for p in CONFIGS}
    assert {"cpu_small.yaml", "paper_448.yaml", "paper_gcn.yaml"} <= names


def test_defaults_reference_in_sync() -> None:
    from model_training.config import reference_yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "defaults.yaml"
    assert path.read_text() == reference_yaml(), "run: python -m model_training.config > " + str(
        path
    )
    assert load_config(path) == Config()
