"""Property-based fuzzing of the decode path: real images of every format, mode and size,
truncated or with flipped bytes, and headers that claim any size. Whatever the bytes, the
preprocessing returns a model input or raises ImageError (never anything else), and an image
whose decode would exceed the memory budget is refused from its header, before decoding."""

from __future__ import annotations

import contextlib
import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mltag_artifact import Preprocessing
from mltag_artifact.preprocess import (
    DecodeBudget,
    DecodeLimits,
    ImageError,
    TooManyPixelsError,
    decode_cost,
    open_image,
    preprocess,
)

PREP = Preprocessing(height=32, width=32, layout="NHWC", input_dtype="uint8",
                     normalize_in_graph=True)  # fmt: skip
LIMITS = DecodeLimits(max_pixels=40_000_000, max_side=16_384, max_aspect_ratio=50)
BUDGET_BYTES = 64 * 2**20
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip

FORMATS = ["PNG", "GIF", "TIFF", "WEBP", "JPEG", "BMP"]
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"]


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """A real image file: any supported format and mode Pillow can write, any small size."""
    fmt, mode = draw(st.sampled_from(FORMATS)), draw(st.sampled_from(MODES))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    im = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    try:
        im = im.convert(mode) if mode not in ("I;16", "I", "F") else _wide(im, mode)
        buf = io.BytesIO()
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold
        buf = io.BytesIO()
        im.convert("RGB").save(buf, fmt)
    return buf.getvalue()


def _wide(im: Image.Image, mode: str) -> Image.Image:
    grey = np.asarray(im.convert("L"), dtype=np.float64)
    if mode == "I;16":
        return Image.fromarray((grey * 257).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((grey * 1000).astype(np.int32))
    return Image.fromarray((grey / 255).astype(np.float32))


@st.composite
def damaged(draw: st.DrawFn, images: st.SearchStrategy[bytes]) -> bytes:
    """An image file cut short, with bytes flipped, or intact."""
    data = bytearray(draw(images))
    kind = draw(st.sampled_from(["intact", "truncated", "flipped"]))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flipped":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
    return bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


@st.composite
def claimed_headers(draw: st.DrawFn) -> bytes:
    """Headers claiming any size (up to 2^31 per side), with almost no pixel data."""
    w, h = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
    fmt = draw(st.sampled_from(["PNG", "GIF", "BMP", "JPEG"]))
    if fmt == "PNG":
        depth, colour = draw(st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 3),
                                              (8, 4), (8, 6), (16, 6)]))  # fmt: skip
        ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 256)
        return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                + _png_chunk(b"IEND", b""))  # fmt: skip
    w16, h16 = w % 65536 or 1, h % 65536 or 1
    if fmt == "GIF":
        screen = struct.pack("<HHBBB", w16, h16, 0, 0, 0)
        frame = b",\x00\x00\x00\x00" + struct.pack("<HH", w16, h16) + b"\x00\x02\x02D\x01\x00;"
        return b"GIF89a" + screen + frame
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\x00" * 64
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 17, 8, h16, w16, 3)
        + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    )
    return (
        b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 64 + b"\xff\xd9"
    )


# Pillow warns about some corrupt metadata before it raises; the errors are what count here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _check(data: bytes) -> None:
    budget = DecodeBudget(BUDGET_BYTES)
    t0 = time.monotonic()
    try:
        sample = preprocess(data, PREP, LIMITS, budget, deadline=time.monotonic() + 5)
    except ImageError:
        pass
    else:
        assert sample.shape == (32, 32, 3) and sample.dtype == np.uint8
    assert budget.in_use == 0  # held only while decoding
    assert time.monotonic() - t0 < 10


@FUZZ
@given(data=damaged(encoded_images()))
def test_real_images_intact_or_damaged(data: bytes) -> None:
    _check(data)


@FUZZ
@given(data=claimed_headers())
def test_headers_claiming_any_size_are_refused_before_decoding(data: bytes) -> None:
    budget = DecodeBudget(BUDGET_BYTES)
    t0 = time.monotonic()
    with contextlib.suppress(ImageError):
        preprocess(data, PREP, LIMITS, budget, deadline=time.monotonic() + 5)
    try:
        im = open_image(data, LIMITS)
    except ImageError:
        return  # refused from the header (limits) or unreadable
    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", (32, 32))  # as the preprocessing does: DCT scaling before the cost
    if decode_cost(im) > BUDGET_BYTES:  # it would have needed more than the budget
        with pytest.raises(TooManyPixelsError, match="budget"):
            preprocess(data, PREP, LIMITS, budget)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("data", [b"", b"\x89PNG", b"GIF89a", b"BM", b"\xff\xd8", b"II*\x00"])
def test_bare_signatures(data: bytes) -> None:
    _check(data)
