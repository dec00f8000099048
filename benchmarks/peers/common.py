"""What every peer server shares, written as a user would without mltag: read the artifact's
manifest, open the ONNX model with ONNX Runtime's defaults, decode with plain Pillow, apply
the manifest's thresholds. Imports nothing from mltag, so a peer venv needs no mltag install.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image


class Model:
    """The artifact's ONNX model, its input size and labels, as a peer server uses them."""

    def __init__(self, artifact: str | Path | None = None) -> None:
        directory = Path(artifact or os.environ["PEER_ARTIFACT"])
        manifest = json.loads((directory / "manifest.json").read_text())
        prep = manifest["preprocessing"]
        if (prep["layout"], prep["input_dtype"], prep["resize"]) != ("NHWC", "uint8", "stretch"):
            raise SystemExit("the peers handle uint8 NHWC stretch-resized models only")
        self.size = (int(prep["width"]), int(prep["height"]))
        self.labels: list[str] = manifest["labels"]
        self.thresholds = np.asarray(manifest["thresholds"], np.float32)
        self.session = ort.InferenceSession(
            str(directory / manifest["onnx"]["file"]), providers=["CPUExecutionProvider"]
        )
        self.input_name = manifest["onnx"]["input_name"]

    def preprocess(self, data: bytes) -> np.ndarray:
        """Plain Pillow: decode in full, RGB, bilinear resize to the model's size."""
        with Image.open(io.BytesIO(data)) as im:
            return self.from_pil(im)

    def from_pil(self, im: Image.Image) -> np.ndarray:
        rgb = im.convert("RGB").resize(self.size, Image.Resampling.BILINEAR)
        return np.asarray(rgb, np.uint8)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def tags(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """One image's tags above the manifest's thresholds, best first."""
        hits = np.flatnonzero(scores >= self.thresholds)
        order = hits[np.argsort(-scores[hits])]
        return [{"label": self.labels[i], "score": float(scores[i])} for i in order]
