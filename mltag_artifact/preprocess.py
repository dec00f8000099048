"""Image bytes -> the model's input sample, as the manifest's `preprocessing` describes.

The one preprocessing code path: the service uses it for every request, training uses it to
decode and resize (before augmenting) and to evaluate, and the exporter uses it to check
ONNX against PyTorch, so a model is measured on exactly the pixels it will be served.
Needs numpy + Pillow. Errors are plain exceptions with a stable machine `code`; mapping a
code onto a transport (an HTTP status) is the caller's business.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

# Pixel limit for trusted local files (training data, evaluation sets): only a guard against
# decompression bombs. The service passes its own, much lower, limit.
LOCAL_MAX_PIXELS = 200_000_000

# We enforce our own pixel limit (`max_pixels`) from the header before decoding; Pillow's
# warning below its hard limit would only add noise. (Filter set once: catch_warnings is not
# thread-safe and decoding runs in a thread pool.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageError(Exception):
    """An image that cannot be used; `code` is stable and machine-readable."""

    code = "invalid_image"  # not an image, or truncated / corrupt data


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"  # a real image in a format we do not accept


class TooManyPixelsError(ImageError):
    code = "image_too_large"  # over the pixel limit, known from the header before decoding


class EmptyImageError(ImageError):
    code = "empty_image"  # zero bytes


IMAGE_ERRORS: tuple[type[ImageError], ...] = (
    ImageError,
    UnsupportedFormatError,
    TooManyPixelsError,
    EmptyImageError,
)


def decode(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode to an RGB (or RGBA) Pillow image, EXIF orientation applied.

    `draft_size` lets JPEGs decode at a reduced scale (DCT scaling) that is still at least
    that size in both dimensions, which is several times faster for large photos.
    """
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(
            f"not a recognisable image; supported formats: {SUPPORTED_FORMATS_TEXT}"
        ) from None
    except Image.DecompressionBombError:
        raise TooManyPixelsError(f"image exceeds the pixel limit of {max_pixels}") from None
    except Exception as e:  # Pillow raises many types for malformed headers
        raise ImageError(f"cannot read image header: {e}") from None
    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"image format {fmt} is not supported; supported: {SUPPORTED_FORMATS_TEXT}"
        )
    w, h = im.size
    if w * h > max_pixels:
        raise TooManyPixelsError(
            f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels"
        )
    if w == 0 or h == 0:
        raise ImageError(f"image has zero size ({w}x{h})")
    try:
        if draft_size is not None and fmt in ("JPEG", "MPO"):
            # Square request: the result is large enough whatever the EXIF rotation.
            side = max(draft_size)
            im.draft("RGB", (side, side))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # no full-size copy when unrotated
        return _to_rgb(im)
    except ImageError:
        raise
    except Exception as e:  # truncated / corrupt data surfaces at load time
        raise ImageError(f"image data is truncated or corrupt ({fmt}): {e}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB, or RGBA where there is transparency (composited later onto the background)."""
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit greyscale: Pillow's convert() would clip at 255, so scale instead.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        if mode == "F":
            top = max(float(arr.max()), 1.0)
        grey = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
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


def load_image(data: bytes, prep: Preprocessing, max_pixels: int = LOCAL_MAX_PIXELS) -> Image.Image:
    """Image file bytes -> the RGB image the model sees (decoded, oriented, resized, alpha
    composited), before `to_array`. Raises ImageError for bad images."""
    im = decode(data, max_pixels, draft_size=(prep.width, prep.height))
    im = resize(im, prep)
    return flatten_alpha(im, prep.alpha_background)


def preprocess(data: bytes, prep: Preprocessing, max_pixels: int = LOCAL_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> model input sample. Raises ImageError for bad images."""
    return to_array(load_image(data, prep, max_pixels), prep)
