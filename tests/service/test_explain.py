"""POST /tag?explain=true, the /v2 heatmaps output and the browser page's routes, through the
real app on the colour demo model (whose explain graph is its exact class activation map over
an 8 x 8 grid)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from mltag_artifact.runner import Explainer
from model_training.demo import write_demo_artifact
from service.app import create_app
from service.settings import Settings
from tests.explain.pointing import QUADRANTS, quadrant_mass
from tests.images import RED, encode, jpeg_with_orientation

from .conftest import ClientFactory


def red_in(quadrant: str, size: tuple[int, int] = (120, 80)) -> bytes:
    """A black image with a red block filling one quadrant."""
    w, h = size
    im = Image.new("RGB", size, (0, 0, 0))
    row, col = divmod(QUADRANTS.index(quadrant), 2)
    im.paste(Image.new("RGB", (w // 2, h // 2), RED), (col * w // 2, row * h // 2))
    return encode(im, "PNG")


def heatmap_of(result: dict[str, Any], label: str) -> np.ndarray:
    tag = next(t for t in result["tags"] if t["label"] == label)
    return np.asarray(tag["heatmap"], dtype=np.float64)


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_heatmap_points_at_the_red_quadrant(client: TestClient, quadrant: str) -> None:
    r = client.post("/tag?explain=true&min_score=0", content=red_in(quadrant),
                    headers={"content-type": "image/png"})  # fmt: skip
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert all("heatmap" in t for t in result["tags"])  # every returned tag has one
    heat = heatmap_of(result, "red")
    assert heat.shape == (8, 8)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert quadrant_mass(heat, quadrant) > 0.95


def test_heatmap_follows_exif_orientation(client: TestClient) -> None:
    data = jpeg_with_orientation(6)  # stored: red left half; shown: rotated 90 degrees
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    red_rows = shown[..., 0].astype(int) - shown[..., 2] > 100  # (H, W) where it is red
    r = client.post("/tag", json={"images": [{"b64": base64.b64encode(data).decode()}],
                                  "explain": True, "min_score": 0.0})  # fmt: skip
    assert r.status_code == 200, r.text
    heat = heatmap_of(r.json()["results"][0], "red")
    top_is_red = red_rows[: len(red_rows) // 2].mean() > 0.9
    assert top_is_red  # the displayed image has red on top
    assert heat[:4].sum() / heat.sum() > 0.95


def test_png_overlay_at_the_image_size(client: TestClient) -> None:
    data = jpeg_with_orientation(6)  # 200 x 100 stored, 100 x 200 shown
    r = client.post("/tag?explain=true&explain_format=png&min_score=0", content=data,
                    headers={"content-type": "image/jpeg"})  # fmt: skip
    assert r.status_code == 200, r.text
    tags = r.json()["results"][0]["tags"]
    assert tags and all("heatmap" not in t for t in tags)
    overlay = Image.open(io.BytesIO(base64.b64decode(tags[0]["heatmap_png"])))
    assert overlay.format == "PNG" and overlay.size == (100, 200)


def test_without_explain_the_explain_graph_never_runs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = Explainer.run

    def counting(self: Explainer, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(Explainer, "run", counting)
    plain = client.post("/tag", content=red_in("top-left"), headers={"content-type": "image/png"})
    assert plain.status_code == 200 and calls == []
    assert all("heatmap" not in t for t in plain.json()["results"][0]["tags"])
    files = [("image", (f"{q}.png", red_in(q), "image/png")) for q in QUADRANTS[:2]]
    assert client.post("/tag?explain=true", files=files).status_code == 200
    assert sum(calls) == 2


@pytest.fixture(scope="module")
def plain_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour demo exported without its explain graph (as every pre-1.2 artifact)."""
    return write_demo_artifact(tmp_path_factory.mktemp("plain") / "a", explain=False).directory


@pytest.fixture
def plain_client(plain_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(artifact_dir=plain_artifact))) as c:
        yield c


def test_a_model_without_heatmaps_says_how_to_get_them(plain_client: TestClient) -> None:
    data, png = red_in("top-left"), {"content-type": "image/png"}
    assert plain_client.post("/tag", content=data, headers=png).status_code == 200
    r = plain_client.post("/tag?explain=true", content=data, headers=png)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_heatmap_output"
    assert "re-export" in r.json()["error"]["message"].lower()
    assert "heatmaps" not in plain_client.get("/labels").json()["model"]
    meta = plain_client.get("/v2/models/colour-demo").json()
    assert [o["name"] for o in meta["outputs"]] == ["probabilities"]


def _infer(client: TestClient, outputs: list[str], binary: bool = False) -> Any:
    x = np.zeros((1, 64, 64, 3), np.uint8)
    x[0, 32:, :32, 0] = 255  # red bottom-left
    tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 64, 64, 3],
              "data": x.reshape(-1).tolist()}  # fmt: skip
    wanted = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    doc = {"inputs": [tensor], "outputs": wanted}
    return client.post("/v2/models/colour-demo/infer", json=doc)


def test_v2_returns_the_heatmaps_output_by_name(client: TestClient) -> None:
    r = _infer(client, ["heatmaps", "probabilities"])
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert [o["name"] for o in r.json()["outputs"]] == ["heatmaps", "probabilities"]
    assert outs["heatmaps"]["shape"] == [1, 6, 8, 8] and outs["probabilities"]["shape"] == [1, 6]
    red = np.maximum(np.asarray(outs["heatmaps"]["data"]).reshape(6, 8, 8)[0], 0)
    assert quadrant_mass(red, "bottom-left") > 0.95
    binary = _infer(client, ["heatmaps"], binary=True)
    head_len = int(binary.headers["inference-header-content-length"])
    assert len(binary.content) - head_len == 6 * 8 * 8 * 4
    assert _infer(client, ["saliency"]).status_code == 400


def test_the_page_and_its_assets(make_client: ClientFactory) -> None:
    with make_client(api_key="sekrit") as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assets = [c.get(f"/ui/{name}") for name in ("app.js", "app.css")]
        assert all(a.status_code == 200 for a in assets)
        for text in [page.text, *(a.text for a in assets)]:  # nothing from elsewhere: offline
            assert not re.search(r"(src|href)=\"?(https?:)?//", text)
            assert "@import" not in text
        assert c.get("/ui/index.html", headers={"x-api-key": "sekrit"}).status_code == 404
        assert c.get("/labels").status_code == 401  # the API still needs the key
        labels = c.get("/labels", headers={"x-api-key": "sekrit"}).json()
        assert labels["model"]["heatmaps"]["method"] == "cam"
    with make_client(ui=False) as c:
        assert c.get("/").status_code == 404
        assert c.get("/ui/app.js").status_code == 404
