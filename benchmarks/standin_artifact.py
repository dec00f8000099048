"""Build a benchmark stand-in artifact: timm EfficientNet-Lite0 at 224 px with a sigmoid head.

Until the trained default model is bundled (models/default), load benchmarks need a model
with the same compute as the real one. Weights are random (speed does not depend on them),
and the artifact says so in its name and description; never serve it for real.

    .venv/bin/python benchmarks/standin_artifact.py --output build/bench-lite0 \
        [--labels 80] [--input uint8-nhwc|float32-nchw]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from mltag_artifact import Architecture, Manifest, OnnxModel, Preprocessing, write_artifact

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class Uint8NhwcWrapper(nn.Module):
    """uint8 NHWC in -> normalise inside the graph -> backbone -> sigmoid."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(STD)).view(1, 3, 1, 1))
        self.register_buffer("shift", (torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() * self.scale - self.shift  # (B, 3, H, W)
        return torch.sigmoid(self.net(x))


class Float32Wrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def build(output: Path, num_labels: int, input_kind: str, size: int = 224) -> None:
    import timm

    net = timm.create_model("efficientnet_lite0", num_classes=num_labels).eval()
    uint8 = input_kind == "uint8-nhwc"
    model = Uint8NhwcWrapper(net) if uint8 else Float32Wrapper(net)
    example = (
        torch.zeros(1, size, size, 3, dtype=torch.uint8) if uint8 else torch.zeros(1, 3, size, size)
    )
    labels = [f"label_{i:03d}" for i in range(num_labels)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            opset_version=17,
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )
        manifest = Manifest(
            name="bench-lite0-standin",
            version="0.0.0",
            description="Benchmark stand-in: EfficientNet-Lite0 with RANDOM weights. Not a tagger.",
            labels=labels,
            thresholds=[0.5] * num_labels,
            preprocessing=Preprocessing(
                height=size,
                width=size,
                resize="stretch",
                interpolation="bilinear",
                layout="NHWC" if uint8 else "NCHW",
                input_dtype="uint8" if uint8 else "float32",
                mean=MEAN,
                std=STD,
                normalize_in_graph=uint8,
            ),
            onnx=OnnxModel(
                sha256="0" * 64, input_name="image", output_name="probabilities", opset=17
            ),
            architecture=Architecture(
                backbone="efficientnet_lite0",
                head="linear",
                loss="none",
                num_params=sum(p.numel() for p in net.parameters()),
                gmacs=0.385,
            ),
        )
        write_artifact(output, manifest, onnx_path, model_card="# Benchmark stand-in\n")
    print(f"wrote {output} ({input_kind}, {num_labels} labels)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--labels", type=int, default=80)
    parser.add_argument("--input", choices=["uint8-nhwc", "float32-nchw"], default="uint8-nhwc")
    args = parser.parse_args()
    build(args.output, args.labels, args.input)


if __name__ == "__main__":
    main()
