"""Heatmaps from an explain graph (manifest `onnx.explain`): raw evidence -> [0, 1] per label,
and a coloured overlay on the image as the model saw it (decoded, EXIF-oriented).

A map covers the model's input: with `resize: stretch` that is the whole image; with
`letterbox` the padding is cut off; with `center_crop` only the centre crop has evidence.
Needs numpy and Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .manifest import Preprocessing

# An overlay is drawn at the image's own size, but never larger than this on its longer side
# (a 12 Mpx photo's PNG would be tens of megabytes of base64).
OVERLAY_MAX_SIDE = 2048
OVERLAY_OPACITY = 0.6  # at the hottest point; cold regions show the image unchanged
# A perceptual ramp (dark blue -> cyan -> yellow -> red), interpolated into 256 colours.
_RAMP = np.array(
    [(0, 0, 130), (0, 90, 255), (0, 220, 220), (120, 230, 60), (255, 220, 0), (230, 30, 0)],
    dtype=np.float32,
)
_LUT = np.stack(
    [
        np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RAMP)), _RAMP[:, c])
        for c in range(3)
    ],
    axis=1,
).astype(np.float32)  # (256, 3)


def normalize(maps: np.ndarray) -> np.ndarray:
    """Raw evidence (..., h, w) -> [0, 1]: max(x, 0) divided by its maximum, per map; a map
    with nothing positive is all zeros."""
    positive = np.maximum(np.asarray(maps, dtype=np.float32), 0.0)
    peak = positive.max(axis=(-2, -1), keepdims=True)
    return np.divide(positive, peak, out=np.zeros_like(positive), where=peak > 0)


def to_image_frame(heat: np.ndarray, size: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    """A (h, w) map over the model's input -> (H, W) over an image of `size` (W, H), bilinear,
    undoing the manifest's resize (letterbox padding cut off, outside a centre crop zero)."""
    w_img, h_img = size
    grid = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32), mode="F")
    h, w = heat.shape
    tw, th = prep.width, prep.height
    if prep.resize == "stretch":
        out = grid.resize((w_img, h_img), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.float32)
    if prep.resize == "letterbox":  # the image is the middle of the input: cut the padding off
        scale = min(tw / w_img, th / h_img)
        nw, nh = max(1, round(w_img * scale)), max(1, round(h_img * scale))
        left, top = (tw - nw) // 2, (th - nh) // 2
        box = (left * w / tw, top * h / th, (left + nw) * w / tw, (top + nh) * h / th)
        out = grid.resize((w_img, h_img), Image.Resampling.BILINEAR, box=box)
        return np.asarray(out, dtype=np.float32)
    # center_crop: the input is the middle of the image; nothing is known outside it
    scale = max(tw / w_img, th / h_img)
    nw, nh = max(tw, round(w_img * scale)), max(th, round(h_img * scale))
    left, top = (nw - tw) // 2, (nh - th) // 2
    x0, y0 = round(left / scale), round(top / scale)
    cw, ch = max(1, round(tw / scale)), max(1, round(th / scale))
    canvas = np.zeros((h_img, w_img), dtype=np.float32)
    inner = np.asarray(grid.resize((cw, ch), Image.Resampling.BILINEAR), dtype=np.float32)
    canvas[y0 : y0 + ch, x0 : x0 + cw] = inner[: h_img - y0, : w_img - x0]
    return canvas


def overlay(image: Image.Image, heat: np.ndarray, prep: Preprocessing) -> Image.Image:
    """`image` (RGB, as decoded and oriented) with the [0, 1] map `heat` coloured over it."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    frame = np.clip(to_image_frame(heat, image.size, prep), 0.0, 1.0)  # (H, W)
    colour = _LUT[np.round(frame * 255).astype(np.uint8)]  # (H, W, 3)
    alpha = (OVERLAY_OPACITY * frame)[..., None]
    out = rgb * (1.0 - alpha) + colour * alpha
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def shown_size(size: tuple[int, int], max_side: int = OVERLAY_MAX_SIDE) -> tuple[int, int]:
    """The overlay's size for an image of `size`: its own, scaled down to `max_side`."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=3)  # level 3: several times faster than 6, ~10% larger
    return buf.getvalue()
