"""JPEG decoding for a 128 px model: plain Pillow, Pillow's draft mode (what mltag does:
libjpeg-turbo's DCT scaling to the smallest scale still covering the input), and simplejpeg
(libjpeg-turbo with scale-on-decode, optionally fast IDCT and upsampling), each followed by
the same bilinear resize. Prints ms per image (best of 5) and the largest pixel difference
from mltag's path.

    .venv-peers/bin/pip install simplejpeg   # (in benchmarks/peers/requirements.txt)
    .venv-peers/bin/python benchmarks/decoders.py [--side 128]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import SIZES, photo_like_jpeg

BILINEAR = Image.Resampling.BILINEAR


def decoders(side: int) -> dict[str, Callable[[bytes], np.ndarray]]:
    import simplejpeg

    def pil_full(b: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((side, side), BILINEAR))

    def pil_draft(b: bytes) -> np.ndarray:
        im = Image.open(io.BytesIO(b))
        im.draft("RGB", (side, side))
        return np.asarray(im.convert("RGB").resize((side, side), BILINEAR, reducing_gap=3.0))

    def simple(fast: bool) -> Callable[[bytes], np.ndarray]:
        def run(b: bytes) -> np.ndarray:
            a = simplejpeg.decode_jpeg(
                b, "RGB", fastdct=fast, fastupsample=fast, min_height=side, min_width=side
            )
            return np.asarray(Image.fromarray(a).resize((side, side), BILINEAR, reducing_gap=3.0))

        return run

    return {
        "Pillow, full decode": pil_full,
        "Pillow draft (mltag)": pil_draft,
        "simplejpeg": simple(False),
        "simplejpeg fast IDCT+upsampling": simple(True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    funcs = decoders(args.side)
    print("| input | decoder | ms / image | max abs diff vs mltag |\n|---|---|---|---|")
    for size, (w, h) in SIZES.items():
        imgs = [photo_like_jpeg(w, h, s) for s in range(8)]
        ref = [funcs["Pillow draft (mltag)"](b).astype(int) for b in imgs]
        for name, f in funcs.items():
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for b in imgs * 5:
                    f(b)
                best = min(best, (time.perf_counter() - t0) / (5 * len(imgs)) * 1000)
            diff = max(
                int(np.abs(f(b).astype(int) - r).max()) for b, r in zip(imgs, ref, strict=True)
            )
            print(f"| {size} | {name} | {best:.2f} | {diff} |")


if __name__ == "__main__":
    main()
