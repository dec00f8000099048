"""Fixtures for bulk tagging: a small collection of real files (good, bad, odd), the bundled
model, and the service's answers for the same files (the real app, in-process)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.images import BLUE, GREEN, RED, encode, jpeg_with_orientation, sixteen_bit_grey, solid

REPO = Path(__file__).resolve().parents[2]
CLIPART = REPO / "tests" / "data" / "clipart"
DEFAULT_MODEL = REPO / "models" / "default"
# A low pixel limit, set alike here and in the service, makes "oversized" cheap to produce.
MAX_PIXELS = 300_000
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _rgba() -> bytes:
    im = Image.new("RGBA", (80, 60), (*BLUE, 0))
    im.paste(Image.new("RGBA", (40, 60), (*RED, 255)), (0, 0))
    return encode(im, "PNG")


def _noise(w: int, h: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr), "JPEG", quality=90)


def gradient_png(side: int) -> bytes:
    """A large PNG that compresses well but takes real time to decode."""
    x = np.linspace(0, 255, side, dtype=np.float32)
    channels = [np.add.outer(x, x) / 2, np.add.outer(x, -x) % 256, np.full((side, side), 128.0)]
    return encode(Image.fromarray(np.stack(channels, -1).astype(np.uint8)), "PNG", compress_level=1)


def collection_files() -> dict[str, bytes]:
    """name -> bytes: every kind of input the service handles, and every way one goes bad."""
    png = (CLIPART / "ice_cream.png").read_bytes()
    icon = io.BytesIO()
    Image.new("RGB", (32, 32), GREEN).save(icon, format="ICO")
    files = {name: (CLIPART / name).read_bytes() for name in ("australia.png", "mantis.png")}
    files.update(
        {
            "ice_cream.png": png,
            "red.png": solid(RED),
            "green.jpg": solid(GREEN, fmt="JPEG"),
            "blue.webp": solid(BLUE, fmt="WEBP"),
            "photo.jpg": _noise(300, 200, 0),
            "sub/rotated.jpg": jpeg_with_orientation(6),
            "sub/grey16.png": sixteen_bit_grey(40000),
            "sub/deeper/alpha.png": _rgba(),
            "anim.gif": solid(RED, fmt="GIF"),
            "scan.tiff": solid(BLUE, fmt="TIFF"),
            # bad ones
            "truncated.png": png[: len(png) // 2],
            "garbage.jpg": b"this is not an image at all" * 10,
            "empty.png": b"",
            "icon.png": icon.getvalue(),  # a real image in a format we do not accept
            "oversized.png": solid(GREEN, size=(800, 600)),  # 480,000 px > MAX_PIXELS
        }
    )
    return files


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of images (nested), plus `notes.txt`, which is not an image."""
    root = tmp_path_factory.mktemp("collection")
    for name, data in collection_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image")
    return root


ServiceTag = Callable[[str, dict[str, str]], dict[str, Any]]


@pytest.fixture(scope="module")
def service_tag(collection: Path) -> Iterator[ServiceTag]:
    """`service_tag(name, query)`: what `POST /tag?<query>` returns for one file of the
    collection, from the real app in-process. Each file goes with a good image beside it, so a
    bad one gets its own per-image error, as in a batch."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(artifact_dir=DEFAULT_MODEL, max_image_pixels=MAX_PIXELS)
    companion = (CLIPART / "mantis.png").read_bytes()
    with TestClient(create_app(settings)) as client:

        def tag(name: str, query: dict[str, str]) -> dict[str, Any]:
            files = [("image", (name, (collection / name).read_bytes())),
                     ("image", ("companion.png", companion))]  # fmt: skip
            r = client.post("/tag", files=files, params=query)
            assert r.status_code == 200, r.text
            result: dict[str, Any] = r.json()["results"][0]
            return result

        yield tag


def ray_env() -> dict[str, str]:
    return {**os.environ, **RAY_ENV}


def read_rows(output: Path) -> list[dict[str, Any]]:
    """Every row of an output directory, Parquet or JSONL, read with pyarrow."""
    import pyarrow.dataset as pads
    import pyarrow.json as pajson

    jsonl = sorted(output.glob("part-*.jsonl"))
    if jsonl:
        rows: list[dict[str, Any]] = []
        for f in jsonl:
            rows.extend(pajson.read_json(f).to_pylist())
        return rows
    table = pads.dataset(output, format="parquet").to_table()
    return table.to_pylist()


def scores_dict(value: Any) -> dict[str, float] | None:
    """Parquet maps read back as (key, value) pairs; JSONL as an object."""
    if value is None:
        return None
    return dict(value)


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    """JSONL, CSV or Parquet, by the file's extension."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        cols = list(rows[0])
        path.write_text(
            ",".join(cols) + "\n" + "".join(",".join(r[c] for c in cols) + "\n" for r in rows)
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path
