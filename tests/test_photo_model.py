"""The bundled photo model (models/photo): a valid artifact with a consistent hierarchy that tags
real photos sensibly through ONNX Runtime, and `make run`'s layout (a repository with the photo
model as default and the clip-art one beside it) through the real service process.

The photos in tests/data/photos are scikit-image's sample data: chelsea (CC0, Stefan van der
Walt), coffee (CC0, Rachel Michetti), astronaut (NASA, public domain), rocket (SpaceX, public
domain)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mltag_artifact import load_artifact
from mltag_artifact.preprocess import preprocess
from mltag_artifact.runner import ModelRunner
from tests.service.live import live_server

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "models" / "photo"
CLIPART = REPO / "models" / "default"
PHOTOS = REPO / "tests" / "data" / "photos"


@pytest.fixture(scope="module")
def tagged() -> dict[str, dict[str, float]]:
    """Per photo: the tags over their shipped thresholds, with scores (ORT, CPU)."""
    artifact = load_artifact(PHOTO)
    m = artifact.manifest
    runner = ModelRunner(artifact, provider="cpu", intra_op_threads=1)
    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    batch = np.stack([preprocess((PHOTOS / n).read_bytes(), m.preprocessing) for n in names])
    scores = runner.run(batch)
    thr = np.asarray(m.thresholds)
    return {
        n: {m.labels[i]: float(row[i]) for i in np.flatnonzero(row >= thr)}
        for n, row in zip(names, scores, strict=True)
    }


def test_photo_artifact_validates_and_hierarchy_is_consistent() -> None:
    m = load_artifact(PHOTO).manifest  # schema, sha256; parents are labels (validator)
    assert m.label_info is not None and len(m.labels) > 1000
    size_mb = (PHOTO / m.onnx.file).stat().st_size / 1e6
    assert 15 < size_mb < 25, size_mb
    assert (PHOTO / "MODEL_CARD.md").is_file()
    for dropped in ("entity", "physical entity", "object", "whole", "chordate", "placental"):
        assert dropped not in m.labels
    by_name = dict(zip(m.labels, m.label_info, strict=True))
    # parents form a DAG: walking up from any tag ends, without meeting itself
    for label in m.labels:
        seen: set[str] = set()
        stack = list(by_name[label].parents)
        while stack:
            p = stack.pop()
            assert p != label, label
            if p not in seen:
                seen.add(p)
                stack.extend(by_name[p].parents)
    assert by_name["cat"].parents == ["feline"]
    assert by_name["tabby"].category == "animal"


def test_cat_photo_gets_cat_tags(tagged: dict[str, dict[str, float]]) -> None:
    tags = tagged["chelsea.jpg"]
    assert {"cat", "feline", "mammal", "animal", "domestic cat"} <= set(tags), tags
    assert tags["cat"] > 0.8


def test_coffee_photo_gets_coffee_tags(tagged: dict[str, dict[str, float]]) -> None:
    tags = tagged["coffee.jpg"]
    assert {"coffee", "espresso", "beverage"} <= set(tags), tags
    assert not any(t in tags for t in ("animal", "cat", "vehicle"))


def test_photos_get_no_wrong_kingdom(tagged: dict[str, dict[str, float]]) -> None:
    assert "animal" not in tagged["rocket.jpg"] and "vehicle" in tagged["rocket.jpg"]
    assert "animal" not in tagged["astronaut.jpg"]


@pytest.mark.integration
@pytest.mark.parametrize("quadrant", [(0, 1), (1, 0)])  # a transposed map fails both
def test_cat_heatmap_points_at_the_cat(quadrant: tuple[int, int]) -> None:
    """The cat photo pasted into one quadrant of a grey canvas: the `cat` tag is still given
    and most of its heatmap mass is in that quadrant (the explain graph, through ORT)."""
    artifact = load_artifact(PHOTO)
    m = artifact.manifest
    assert m.onnx.explain is not None and m.onnx.explain.method == "cam"
    side = m.preprocessing.width
    canvas = Image.new("RGB", (2 * side, 2 * side), (128, 128, 128))
    with Image.open(PHOTOS / "chelsea.jpg") as cat:
        canvas.paste(
            cat.convert("RGB").resize((side, side)), (quadrant[1] * side, quadrant[0] * side)
        )
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    runner = ModelRunner(artifact, provider="cpu", intra_op_threads=1)
    scores, maps = runner.run_explain(preprocess(buf.getvalue(), m.preprocessing)[np.newaxis])
    i = m.labels.index("cat")
    assert scores[0, i] >= m.thresholds[i], scores[0, i]
    heat = np.maximum(maps[0, i], 0)
    h, w = heat.shape  # 7 x 7: the middle row and column straddle two quadrants
    rows, cols = np.indices(heat.shape) + 0.5  # cell centres
    centre = (float((heat * rows).sum() / heat.sum()), float((heat * cols).sum() / heat.sum()))
    inside = [
        (c < half) == (q == 0) for c, half, q in zip(centre, (h / 2, w / 2), quadrant, strict=True)
    ]
    assert all(inside), (centre, heat.round(2))
    near_rows, near_cols = (
        (slice(0, h // 2), slice(h - h // 2, h)),
        (slice(0, w // 2), slice(w - w // 2, w)),
    )
    far = heat[near_rows[1 - quadrant[0]], near_cols[1 - quadrant[1]]]
    assert far.sum() < 0.05 * heat.sum(), heat.round(2)  # the opposite quadrant stays cold


def test_make_run_layout_serves_photo_by_default_and_clipart_on_request(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    for name, target in (("photo", PHOTO), ("clipart", CLIPART)):
        (repo / name).mkdir(parents=True)
        (repo / name / "1").symlink_to(target)
    env = {"MLTAG_MODEL_REPOSITORY": str(repo), "MLTAG_DEFAULT_MODEL": "photo"}
    with live_server([sys.executable, "-m", "service"], env=env, timeout_s=60) as server:
        cat = (PHOTOS / "chelsea.jpg").read_bytes()
        r = httpx.post(server.url + "/tag", files={"image": ("c.jpg", cat)}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["name"] == "photo"
        tags = {t["label"]: t for t in body["results"][0]["tags"]}
        assert {"cat", "feline", "animal"} <= set(tags)
        assert tags["cat"]["parents"] == ["feline"]
        art = (REPO / "tests" / "data" / "clipart" / "ice_cream.png").read_bytes()
        r = httpx.post(
            server.url + "/tag?model=clipart", files={"image": ("i.png", art)}, timeout=30
        )
        assert r.status_code == 200, r.text
        assert r.json()["model"]["name"] == "clipart"
        assert "food" in {t["label"] for t in r.json()["results"][0]["tags"]}


@pytest.mark.slow
def test_photo_model_command_rebuilds_the_bundled_tags(tmp_path: Path) -> None:
    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet 3.0 not installed (apt-get install wordnet-base)")
    from model_training.cli import main

    assert main(["photo-model", "--output", str(tmp_path / "photo")]) == 0
    built = load_artifact(tmp_path / "photo").manifest
    bundled = load_artifact(PHOTO).manifest
    assert built.labels == bundled.labels
    assert built.thresholds == bundled.thresholds
    assert built.label_info == bundled.label_info
