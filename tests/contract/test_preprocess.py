"""Image decoding and preprocessing: formats, modes, orientation, limits, layouts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import (
    AspectRatioError,
    DecodeBudget,
    DecodeBudgetError,
    DecodeLimits,
    EmptyImageError,
    ImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
    decode,
    decode_cost,
    open_image,
    preprocess,
)
from tests.images import BLUE, RED, encode, jpeg_with_orientation, sixteen_bit_grey, solid

PREP = Preprocessing(height=32, width=32, layout="NHWC", input_dtype="uint8",
                     normalize_in_graph=True, mean=(0, 0, 0), std=(1, 1, 1))  # fmt: skip
LIMIT = DecodeLimits(max_pixels=10_000_000)


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
        preprocess(data, PREP, DecodeLimits(max_pixels=1_000_000))


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


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG claiming any size, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # far too little data for the size claimed
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("size", "limits", "error", "message"),
    [
        ((1, 39_000_000), DecodeLimits(), TooManyPixelsError, "65535 pixels on the longer side"),
        ((10, 60_000), DecodeLimits(), AspectRatioError, "6000:1; the limit is 1000:1"),
        ((300, 10), DecodeLimits(max_aspect_ratio=20), AspectRatioError, "30:1; the limit is 20:1"),
        ((70_000, 2_000), DecodeLimits(), TooManyPixelsError, "65535 pixels on the longer side"),
        ((5_000, 100), DecodeLimits(max_side=4_096), TooManyPixelsError, "4096 pixels on the"),
    ],
    ids=["1x39M", "6000:1", "30:1", "side", "side-setting"],
)
def test_side_and_aspect_limits_from_the_header(
    size: tuple[int, int], limits: DecodeLimits, error: type[ImageError], message: str
) -> None:
    """Refused from the header alone: these files hold no pixel data, so any decode would fail
    with a different error."""
    with pytest.raises(error, match=re.escape(message)) as info:
        preprocess(png_header(*size), PREP, limits)
    assert info.value.code in ("extreme_aspect_ratio", "image_too_large")


def test_sixteen_bit_conversion_needs_no_float_copy() -> None:
    """A 16-bit greyscale image converts in strips: numpy never holds a float64 (8 bytes per
    pixel) or even a full uint16 copy of it. (A 6300x6300 one once took 1 GB and 6 s.)"""
    import tracemalloc

    h, w = 2_000, 1_500
    arr = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 65536).astype(np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    tracemalloc.start()
    try:
        im = decode(data)  # full size, no draft: the old path's worst case
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The 8-bit result (1 byte per pixel) and the compressed input; float64 was 8 and more.
    assert peak < 2.5 * h * w, f"numpy peak {peak / (h * w):.1f} bytes per pixel"
    expected = (arr // 257).astype(np.uint8)  # 65535 -> 255, as the float scaling did
    np.testing.assert_array_equal(np.asarray(im)[:, :, 0], expected)


def test_sixteen_bit_large_image_shrinks_before_rgb() -> None:
    arr = np.full((3_000, 2_000), 40_000, dtype=np.uint16)
    out = preprocess(encode(Image.fromarray(arr), "PNG"), PREP, LIMIT)
    np.testing.assert_allclose(mean_rgb(out), [40_000 // 257] * 3, atol=1)


def test_decode_cost_counts_pillow_storage_and_copies() -> None:
    rgb = open_image(solid(RED, size=(100, 50), fmt="PNG"), LIMIT)
    assert decode_cost(rgb) == 100 * 50 * (4 + 4)  # RGB padded to 4 bytes, transposed copy
    grey16 = open_image(sixteen_bit_grey(1000), LIMIT)
    assert decode_cost(grey16) == 50 * 40 * (2 + 1)
    palette = open_image(encode(Image.new("P", (10, 10)), "PNG"), LIMIT)
    assert decode_cost(palette) == 10 * 10 * (1 + 1 + 4)


def test_decode_budget_waits_for_room_and_refuses_what_can_never_fit() -> None:
    import threading
    import time

    budget = DecodeBudget(1_000)
    with pytest.raises(TooManyPixelsError, match="budget is"), budget.hold(1_001):
        pass
    order: list[str] = []
    release = threading.Event()

    def second() -> None:
        with budget.hold(600):
            order.append("second")
            release.wait(5)

    with budget.hold(600):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.1)
        assert order == [] and budget.in_use == 600  # waiting: 600 + 600 > 1000
        past = time.monotonic()  # a deadline already past: refused at once
        with pytest.raises(DecodeBudgetError), budget.hold(500, deadline=past):
            pass
        order.append("first done")
    for _ in range(100):
        if order == ["first done", "second"]:
            break
        time.sleep(0.02)
    assert order == ["first done", "second"]
    assert budget.in_use == 600
    release.set()
    waiter.join(5)
    assert budget.in_use == 0


def test_budget_is_held_while_decoding_and_released_after() -> None:
    budget = DecodeBudget(10**9)
    data = solid(RED, size=(64, 48), fmt="PNG")
    preprocess(data, PREP, LIMIT, budget)
    assert budget.in_use == 0
    with pytest.raises(ImageError):
        preprocess(data[:80], PREP, LIMIT, budget)  # truncated: fails inside the hold
    assert budget.in_use == 0


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [0, 70_000], [0, 255]),  # over 255: the 16-bit range, clipped
        ("I", [0, 200], [0, 200]),  # within 8 bits: as is
        ("F", [0.0, 0.5], [0, 127]),  # 0..1 floats: scaled from [0, 1]
        ("F", [0.0, 1000.0], [0, 255]),  # larger: scaled by the maximum
    ],
    ids=["int32 over 16 bits", "int32 within 8 bits", "unit float", "float"],
)
def test_32_bit_modes_scale_by_their_range(
    mode: str, values: list[float], expected: list[int]
) -> None:
    arr = np.zeros((600, 400), dtype=np.int32 if mode == "I" else np.float32)
    arr[:, 200:] = values[1]
    arr[:, :200] = values[0]
    im = Image.fromarray(arr)
    assert im.mode == mode
    out = decode(encode(im, "TIFF"), LIMIT, draft_size=(32, 32))  # shrinks before converting
    grey = np.asarray(out)[:, :, 0]
    assert grey[:, 0].max() == expected[0]
    assert abs(int(grey[:, -1].min()) - expected[1]) <= 1
