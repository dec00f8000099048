"""`explain=true` on POST /tag: each returned tag's heatmap, from the explain graph's raw maps
(the contract's `heatmap` module does the arithmetic): a [0, 1] grid at the feature map's
resolution, or (`explain_format=png`) a base64 PNG of the map over the image. What a map
means per head: docs/method.md#where-a-tag-comes-from."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from mltag_artifact import Preprocessing
from mltag_artifact.heatmap import normalize, overlay, png_bytes, shown_size
from mltag_artifact.preprocess import DecodeLimits, decode, flatten_alpha

GRID_DECIMALS = 4  # 1e-4 of the peak: finer than any colour ramp, and short JSON


def grids(maps: np.ndarray, indices: list[int]) -> list[list[list[float]]]:
    """Raw maps (C, h, w) -> the chosen labels' [0, 1] grids, rows top to bottom."""
    if not indices:
        return []
    heat = np.round(normalize(maps[indices]), GRID_DECIMALS)  # (k, h, w)
    return [h.tolist() for h in heat]


def overlays(
    payload: bytes,
    maps: np.ndarray,
    indices: list[int],
    prep: Preprocessing,
    limits: DecodeLimits,
) -> list[str]:
    """One image's overlays for the chosen labels: base64 PNGs at the image's size (as
    decoded and EXIF-oriented; at most OVERLAY_MAX_SIDE on its longer side). CPU work: runs
    in the decode pool."""
    if not indices:
        return []
    image = flatten_alpha(decode(payload, limits), prep.alpha_background)
    image = image.resize(shown_size(image.size))
    heat = normalize(maps[indices])
    return [base64.b64encode(png_bytes(overlay(image, h, prep))).decode("ascii") for h in heat]


def attach(tags: list[dict[str, Any]], key: str, values: list[Any]) -> None:
    for tag, value in zip(tags, values, strict=True):
        tag[key] = value
