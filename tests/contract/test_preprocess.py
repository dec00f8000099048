"""Image decoding and preprocessing: formats, modes, orientation, limits, layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import (
    EmptyImageError,
    ImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
    decode,
    preprocess,
)
from tests.images import BLUE, RED, encode, jpeg_with_orientation, sixteen_bit_grey, solid

PREP = Preprocessing(height=32, width=32, layout="NHWC", input_dtype="uint8",
                     normalize_in_graph=True, mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip
LIMIT = 10_000_000


def mean_rgb(sample: np.ndarray) -> np.ndarray:
    return sample.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_supported_formats_decode(fmt: str) -> None:
    out = preprocess(solid(RED, fmt=fmt), PREP, LIMIT)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    np.testing.assert_allclose(mean_rgb(out), RED, atol=12)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (30, 30), c) for c in (RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(mean_rgb(preprocess(data, PREP, LIMIT)), RED, atol=12)


@pytest.mark.parametrize(
    ("orientation", "left_is_red"),
    [(1, True), (3, False), (2, False)],  # 3: rotated 180°, 2: mirrored
)
def test_exif_orientation_applied(orientation: int, left_is_red: bool) -> None:
    im = decode(jpeg_with_orientation(orientation), LIMIT)
    left = np.asarray(im)[:, : im.width // 4].reshape(-1, 3).mean(axis=0)
    assert (left[0] > left[2]) == left_is_red


def test_exif_rotation_90_swaps_sides() -> None:
    im = decode(jpeg_with_orientation(6), LIMIT)  # 200x100 stored, shown 100x200
    assert im.size == (100, 200)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("L", (128, 128, 128)),
        ("P", RED),
        ("CMYK", None),
        ("1", (255, 255, 255)),
    ],
)
def test_colour_modes(mode: str, expected: tuple[int, int, int] | None) -> None:
    base = Image.new("RGB", (40, 40), RED if mode != "L" else (128, 128, 128))
    im = base.convert(mode) if mode != "1" else Image.new("1", (40, 40), 1)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "1" else "PNG")
    out = preprocess(encode(im, fmt), PREP, LIMIT)
    assert out.shape == (32, 32, 3)
    if expected is not None:
        np.testing.assert_allclose(mean_rgb(out), expected, atol=12)
    else:  # CMYK round trip keeps the hue: red dominant
        r, g, b = mean_rgb(out)
        assert r > g + 50 and r > b + 50


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    out = preprocess(sixteen_bit_grey(32768), PREP, LIMIT)  # half of 65535
    np.testing.assert_allclose(mean_rgb(out), (128, 128, 128), atol=2)


def test_alpha_composited_on_background() -> None:
    im = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    im.paste(Image.new("RGBA", (20, 40), (0, 0, 255, 255)), (0, 0))
    out = preprocess(encode(im, "PNG"), PREP, LIMIT)
    left, right = out[:, :12].reshape(-1, 3).mean(0), out[:, 20:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(left, (0, 0, 255), atol=3)
    np.testing.assert_allclose(right, (255, 255, 255), atol=3)  # background, not red


def test_truncated_image_is_an_image_error() -> None:
    data = solid(RED, size=(300, 300), fmt="JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess(data[: len(data) // 2], PREP, LIMIT)


def test_garbage_and_empty() -> None:
    with pytest.raises(ImageError, match="not a recognisable image; supported formats: JPEG"):
        preprocess(b"definitely not an image", PREP, LIMIT)
    with pytest.raises(EmptyImageError):
        preprocess(b"", PREP, LIMIT)


def test_unsupported_format_names_the_format() -> None:
    data = encode(Image.new("RGB", (16, 16), RED), "ICO")
    with pytest.raises(UnsupportedFormatError, match="ICO is not supported"):
        preprocess(data, PREP, LIMIT)


def test_pixel_limit_checked_before_decoding() -> None:
    data = solid(RED, size=(2000, 1000), fmt="PNG")
    with pytest.raises(
        TooManyPixelsError, match="2000x1000 = 2000000 pixels; the limit is 1000000"
    ):
        preprocess(data, PREP, 1_000_000)


def test_nchw_float_normalisation() -> None:
    prep = Preprocessing(height=16, width=24, layout="NCHW", input_dtype="float32",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # fmt: skip
    out = preprocess(solid((255, 0, 128)), prep, LIMIT)
    assert out.shape == (3, 16, 24)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [2.0, -2.0, (128 / 255 - 0.5) / 0.25], atol=1e-3)


def test_bgr_order() -> None:
    prep = PREP.model_copy(update={"channel_order": "BGR"})
    np.testing.assert_allclose(mean_rgb(preprocess(solid(RED), prep, LIMIT)), RED[::-1], atol=12)


@pytest.mark.parametrize("mode", ["letterbox", "center_crop"])
def test_aspect_preserving_resizes(mode: str) -> None:
    # 200x100: left half red, right half blue
    im = Image.new("RGB", (200, 100), BLUE)
    im.paste(Image.new("RGB", (100, 100), RED), (0, 0))
    prep = PREP.model_copy(update={"resize": mode, "pad_value": (0, 255, 0)})
    out = preprocess(encode(im, "PNG"), prep, LIMIT)
    assert out.shape == (32, 32, 3)
    if mode == "letterbox":  # 32x16 image centred, green bars above and below
        np.testing.assert_allclose(out[0, 16], (0, 255, 0), atol=2)
        np.testing.assert_allclose(out[16, 2], RED, atol=12)
    else:  # centre 100x100 crop: left quarter red, right quarter blue
        np.testing.assert_allclose(out[16, 2], RED, atol=12)
        np.testing.assert_allclose(out[16, 29], BLUE, atol=12)


def test_jpeg_draft_keeps_quality_for_large_photos() -> None:
    data = solid(RED, size=(1920, 1080), fmt="JPEG")
    im = decode(data, LIMIT, draft_size=(32, 32))
    assert min(im.size) >= 32 and im.size[0] < 1920  # decoded at a reduced scale
    np.testing.assert_allclose(mean_rgb(preprocess(data, PREP, LIMIT)), RED, atol=12)
