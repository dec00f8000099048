"""Image bytes -> the model's input sample, as the manifest's `preprocessing` describes.

The one preprocessing code path: the service uses it for every request, training uses it to
decode and resize (before augmenting) and to evaluate, and the exporter uses it to check
ONNX against PyTorch, so a model is measured on exactly the pixels it will be served.
Needs numpy + Pillow. Errors are plain exceptions with a stable machine `code`; mapping a
code onto a transport (an HTTP status) is the caller's business.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .manifest import Preprocessing

# Pillow format names we accept. MPO is how Pillow reports multi-picture (camera) JPEGs.
SUPPORTED_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "BMP": "BMP",
    "GIF": "GIF",
    "TIFF": "TIFF",
}
SUPPORTED_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF (first frame), TIFF"


@dataclass(frozen=True)
class DecodeLimits:
    """What an image may be, checked from its header before any pixel is decoded."""

    max_pixels: int = 200_000_000  # width x height
    max_side: int = 65_535  # pixels on the longer side
    max_aspect_ratio: float = 1_000.0  # longer side / shorter side


# Trusted local files (training data, evaluation sets): only a guard against decompression
# bombs. Untrusted input (the service, bulk tagging) gets much lower defaults.
LOCAL_LIMITS = DecodeLimits()
UNTRUSTED_LIMITS = DecodeLimits(max_pixels=40_000_000, max_side=16_384, max_aspect_ratio=50.0)

# We enforce our own pixel limit from the header before decoding; Pillow's warning below its
# hard limit would only add noise. (Filter set once: catch_warnings is not thread-safe and
# decoding runs in a thread pool.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_HIGH_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose)
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ROWS_PER_STRIP = 256


class ImageError(Exception):
    """An image that cannot be used; `code` is stable and machine-readable."""

    code = "invalid_image"  # not an image, or truncated / corrupt data


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"  # a real image in a format we do not accept


class TooManyPixelsError(ImageError):
    code = "image_too_large"  # over the pixel, side or decode-memory limit (from the header)


class AspectRatioError(ImageError):
    code = "extreme_aspect_ratio"  # e.g. 1 x 39,000,000: slow to decode, useless to a model


class EmptyImageError(ImageError):
    code = "empty_image"  # zero bytes


class DecodeBudgetError(ImageError):
    code = "decode_budget_exhausted"  # no decode memory came free before the deadline


IMAGE_ERRORS: tuple[type[ImageError], ...] = (
    ImageError,
    UnsupportedFormatError,
    TooManyPixelsError,
    AspectRatioError,
    EmptyImageError,
    DecodeBudgetError,
)


class DecodeBudget:
    """Bytes of decoded pixels in flight, process-wide: a decode waits for its estimated peak
    memory (`decode_cost`) to fit, so concurrent decodes of large images can never add up to
    more than `limit_bytes`, whatever the thread count."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.in_use = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int, deadline: float | None = None) -> Iterator[None]:
        """Hold `nbytes` for the duration, waiting (until `deadline`, time.monotonic()) for
        room. An image larger than the whole budget can never fit: TooManyPixelsError."""
        if nbytes > self.limit_bytes:
            raise TooManyPixelsError(
                f"decoding this image needs about {nbytes / 2**20:.0f} MiB; the decode memory "
                f"budget is {self.limit_bytes / 2**20:.0f} MiB"
            )
        with self._cond:
            while self.in_use + nbytes > self.limit_bytes:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise DecodeBudgetError(
                        "the server is decoding too many large images; retry later"
                    )
                self._cond.wait(timeout)
            self.in_use += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


def open_image(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Read the header only: format, size and the limits, before any pixel is decoded."""
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(
            f"not a recognisable image; supported formats: {SUPPORTED_FORMATS_TEXT}"
        ) from None
    except Image.DecompressionBombError:
        raise TooManyPixelsError(f"image exceeds the pixel limit of {limits.max_pixels}") from None
    except Exception as e:  # Pillow raises many types for malformed headers
        raise ImageError(f"cannot read image header: {e}") from None
    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"image format {fmt} is not supported; supported: {SUPPORTED_FORMATS_TEXT}"
        )
    _check_size(*im.size, limits)
    return im


def _check_size(w: int, h: int, limits: DecodeLimits) -> None:
    if w == 0 or h == 0:
        raise ImageError(f"image has zero size ({w}x{h})")
    if w * h > limits.max_pixels:
        raise TooManyPixelsError(
            f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels} pixels"
        )
    if max(w, h) > limits.max_side:
        raise TooManyPixelsError(
            f"image is {w}x{h}; the limit is {limits.max_side} pixels on the longer side"
        )
    if max(w, h) / min(w, h) > limits.max_aspect_ratio:
        raise AspectRatioError(
            f"image is {w}x{h}, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; the limit is "
            f"{limits.max_aspect_ratio:g}:1"
        )


def _bytes_per_pixel(mode: str) -> int:
    """Pillow's storage per pixel: one byte for 1/L/P, two for I;16, four for the rest (it
    pads multi-band 8-bit modes to four bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_cost(im: Image.Image) -> int:
    """Peak bytes decoding `im` (after `draft`) may hold: the decoded pixels, a transposed
    copy (EXIF orientation) and a converted copy (to RGB/RGBA, or to 8 bits)."""
    w, h = im.size
    native = _bytes_per_pixel(im.mode)
    if im.mode in ("RGB", "RGBA"):
        extra = native  # the transposed copy
    elif im.mode in _HIGH_BIT:
        extra = 1  # converted to 8 bits (in strips, or after shrinking), then shrunk
    else:
        extra = native + 4  # transposed copy, then the RGB/RGBA conversion
    return w * h * (native + extra)


def decode(
    data: bytes,
    limits: DecodeLimits = LOCAL_LIMITS,
    draft_size: tuple[int, int] | None = None,
    budget: DecodeBudget | None = None,
    deadline: float | None = None,
) -> Image.Image:
    """Decode to an RGB (or RGBA) Pillow image, EXIF orientation applied.

    `draft_size` lets JPEGs decode at a reduced scale (DCT scaling) that is still at least
    that size in both dimensions, which is several times faster for large photos; it also lets
    16/32-bit images shrink to about three times that size before they are converted.
    With a `budget`, the decode first waits (until `deadline`) for its memory to fit in it.
    """
    im = open_image(data, limits)
    fmt = im.format
    if draft_size is not None and fmt in ("JPEG", "MPO"):
        # Square request: the result is large enough whatever the EXIF rotation.
        side = max(draft_size)
        im.draft("RGB", (side, side))
    held = budget.hold(decode_cost(im), deadline) if budget is not None else nullcontext()
    with held:
        try:
            im.load()
            method = _ORIENTATION.get(im.getexif().get(ExifTags.Base.Orientation, 1))
            if im.mode in _HIGH_BIT:
                im = _high_bit_to_grey(im, max(draft_size) if draft_size else None)
            if method is not None:
                im = im.transpose(method)
            return _to_rgb(im)
        except ImageError:
            raise
        except Exception as e:  # truncated / corrupt data surfaces at load time
            raise ImageError(f"image data is truncated or corrupt ({fmt}): {e}") from None


def _high_bit_to_grey(im: Image.Image, target_side: int | None) -> Image.Image:
    """16/32-bit greyscale -> 8-bit "L", scaled (Pillow's convert() would clip at 255): 16-bit
    values divided by 257 (65535 -> 255), 32-bit ones by their range. No float64 copy of the
    whole image: I;16 converts in strips of rows, I and F after shrinking; either is then
    shrunk (box filter) to about three times `target_side`, as the later resize would, so the
    RGB conversion is of a small image."""
    factor = int(min(im.size) / target_side / 3) if target_side else 1
    if im.mode.startswith("I;16"):  # Pillow cannot shrink I;16 itself
        w, h = im.size
        grey = np.empty((h, w), dtype=np.uint8)
        for y in range(0, h, _ROWS_PER_STRIP):
            strip = np.array(im.crop((0, y, w, min(h, y + _ROWS_PER_STRIP))), dtype=np.uint16)
            np.floor_divide(strip, 257, out=strip)
            grey[y : y + strip.shape[0]] = strip
        out = Image.fromarray(grey)  # uint8 (H, W): mode "L"
        return out.reduce(factor) if factor > 1 else out
    hi = float(im.getextrema()[1])  # type: ignore[arg-type]  # one band: (min, max)
    top = max(hi, 1.0) if im.mode == "F" else (65535.0 if hi > 255 else 255.0)
    if factor > 1:
        im = im.reduce(factor)
    arr = np.asarray(im, dtype=np.float32) * np.float32(255.0 / top)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))  # mode "L"


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB, or RGBA where there is transparency (composited later onto the background)."""
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        return im
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def flatten_alpha(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite an RGBA image onto `background`; other modes pass through."""
    if im.mode != "RGBA":
        return im
    canvas = Image.new("RGB", im.size, background)
    canvas.paste(im, mask=im.getchannel("A"))
    return canvas


def resize(im: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize to the model's input size as the manifest says (one resampling pass)."""
    resample = _RESAMPLE[prep.interpolation]
    tw, th = prep.width, prep.height
    w, h = im.size
    if prep.resize == "stretch":
        out = im.resize((tw, th), resample, reducing_gap=3.0)
    elif prep.resize == "letterbox":
        scale = min(tw / w, th / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        inner = im.resize((nw, nh), resample, reducing_gap=3.0)
        out = Image.new(im.mode, (tw, th), prep.pad_value + ((255,) if im.mode == "RGBA" else ()))
        out.paste(inner, ((tw - nw) // 2, (th - nh) // 2))
    else:  # center_crop: shorter side to target, then crop the centre
        scale = max(tw / w, th / h)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        left, top = (nw - tw) // 2, (nh - th) // 2
        out = im.resize(
            (tw, th),
            resample,
            box=(left / scale, top / scale, (left + tw) / scale, (top + th) / scale),
            reducing_gap=3.0,
        )
    return out


def to_array(im: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resized RGB image -> one sample in the model's layout and dtype (no batch axis)."""
    arr = np.asarray(im, dtype=np.uint8)  # (H, W, 3)
    if prep.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    if prep.input_dtype == "float32":
        x = arr.astype(np.float32)
        if not prep.normalize_in_graph:
            mean = np.asarray(prep.mean, dtype=np.float32) * 255.0
            std = np.asarray(prep.std, dtype=np.float32) * 255.0
            x = (x - mean) / std
        sample: np.ndarray = x
    else:
        sample = arr
    if prep.layout == "NCHW":
        sample = sample.transpose(2, 0, 1)
    return np.ascontiguousarray(sample)


def load_image(
    data: bytes,
    prep: Preprocessing,
    limits: DecodeLimits = LOCAL_LIMITS,
    budget: DecodeBudget | None = None,
    deadline: float | None = None,
) -> Image.Image:
    """Image file bytes -> the RGB image the model sees (decoded, oriented, resized, alpha
    composited), before `to_array`. Raises ImageError for bad images."""
    im = decode(data, limits, (prep.width, prep.height), budget, deadline)
    im = resize(im, prep)
    return flatten_alpha(im, prep.alpha_background)


def preprocess(
    data: bytes,
    prep: Preprocessing,
    limits: DecodeLimits = LOCAL_LIMITS,
    budget: DecodeBudget | None = None,
    deadline: float | None = None,
) -> np.ndarray:
    """Image file bytes -> model input sample. Raises ImageError for bad images."""
    return to_array(load_image(data, prep, limits, budget, deadline), prep)
