"""Test images made on the fly with Pillow (every format and mode the API must handle)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

RED = (220, 20, 30)
GREEN = (20, 200, 40)
BLUE = (20, 30, 220)
YELLOW = (240, 230, 30)


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (96, 64), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, color), fmt)


def jpeg_with_orientation(orientation: int) -> bytes:
    """Left half red, right half blue; EXIF says how to rotate it for display."""
    im = Image.new("RGB", (200, 100), BLUE)
    im.paste(Image.new("RGB", (100, 100), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", exif=exif, quality=95)


def sixteen_bit_grey(value: int) -> bytes:
    arr = np.full((40, 50), value, dtype=np.uint16)
    return encode(Image.fromarray(arr), "PNG")
