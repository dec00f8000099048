"""The contract's heatmap helpers: normalisation, and maps over the model's input put back
over the image for each resize mode (what PNG overlays draw)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.heatmap import normalize, overlay, shown_size, to_image_frame


def prep(resize: str) -> Preprocessing:
    return Preprocessing(height=64, width=64, resize=resize)  # type: ignore[arg-type]


def test_normalize_per_map() -> None:
    maps = np.stack([np.array([[-2.0, 1.0], [4.0, 2.0]]), np.full((2, 2), -1.0)])
    out = normalize(maps)
    np.testing.assert_allclose(out[0], [[0.0, 0.25], [1.0, 0.5]])
    assert not out[1].any()  # nothing positive: all zeros, no division by zero


def test_stretch_covers_the_whole_image() -> None:
    heat = np.zeros((8, 8), np.float32)
    heat[:, 6:] = 1.0  # the right quarter of the input
    frame = to_image_frame(heat, (200, 100), prep("stretch"))
    assert frame.shape == (100, 200)
    assert frame[:, :130].max() < 0.05 and frame[:, 170:].min() > 0.95


def test_letterbox_cuts_the_padding_off() -> None:
    # A 2:1 image fills input rows 16..48 of 64: map rows 0-1 and 6-7 are padding (row 1
    # still blends into the image's edge: the map is bilinear between cell centres).
    heat = np.zeros((8, 8), np.float32)
    heat[0] = 1.0
    assert to_image_frame(heat, (128, 64), prep("letterbox")).max() < 0.05
    heat = np.zeros((8, 8), np.float32)
    heat[2] = 1.0  # the image's top rows
    frame = to_image_frame(heat, (128, 64), prep("letterbox"))
    assert frame.shape == (64, 128)
    assert frame[:8].mean() > 0.5 and frame[32:].max() < 0.05


def test_center_crop_knows_nothing_outside_the_crop() -> None:
    heat = np.ones((8, 8), np.float32)
    frame = to_image_frame(heat, (128, 64), prep("center_crop"))  # the crop: x 32..96
    assert frame.shape == (64, 128)
    assert not frame[:, :30].any() and not frame[:, 98:].any()
    assert frame[:, 36:92].min() > 0.95


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center_crop"])
def test_overlay_keeps_the_image_size(resize: str) -> None:
    image = Image.new("RGB", (90, 40), (10, 200, 30))
    out = overlay(image, np.eye(8, dtype=np.float32), prep(resize))
    assert out.size == (90, 40) and out.mode == "RGB"


def test_shown_size_caps_the_longer_side() -> None:
    assert shown_size((4000, 3000)) == (2048, 1536)
    assert shown_size((300, 200)) == (300, 200)
