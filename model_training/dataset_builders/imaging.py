"""Safe raster handling: bounded decoding, downscaling, alpha cut-outs, white compositing.

PNG has no reduced-resolution decoding (Pillow's `draft` works for JPEG only), so an image
is decoded only if its header says it has at most `max_pixels` pixels; larger files are
reported as `TooLargeError` without decoding a single row. Pillow's own decompression-bomb
check is kept as a second guard.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

DEFAULT_MAX_PIXELS = 50_000_000
ALPHA_THRESHOLD = 8  # alpha at or below this counts as background when trimming


class TooLargeError(ValueError):
    """The image has more pixels than the configured limit; it was not decoded."""


class TransparentImageError(ValueError):
    """The image is fully transparent."""


def load_rgba(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open `path` and return it as RGBA (palette transparency, LA and L handled by Pillow).

    Raises `TooLargeError` before decoding when width x height > `max_pixels`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise TooLargeError(str(exc)) from exc
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise TooLargeError(f"{width}x{height} = {width * height / 1e6:.0f} Mpx")
            return image.convert("RGBA")


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so the longest side is at most `max_side` (Lanczos).

    Pillow resamples RGBA with premultiplied alpha, so transparent pixels' colours do not
    bleed into the edges.
    """
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def trim_alpha(image: Image.Image, threshold: int = ALPHA_THRESHOLD) -> Image.Image:
    """Crop an RGBA image to the bounding box of its visible pixels."""
    mask = image.getchannel("A").point(lambda a: 255 if a > threshold else 0)
    box = mask.getbbox()
    if box is None:
        raise TransparentImageError("fully transparent")
    return image.crop(box)


def on_background(image: Image.Image, color: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite an RGBA image over a solid colour; returns RGB."""
    canvas = Image.new("RGBA", image.size, (*color, 255))
    canvas.alpha_composite(image)
    return canvas.convert("RGB")


def save_rgb(image: Image.Image, path: Path, fmt: str, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jpg":
        image.save(path, format="JPEG", quality=quality, optimize=True)
    else:
        image.save(path, format="PNG", compress_level=6)
