"""The model repository: several models in one process, versions swapped in without a failed
request, a broken version never served, unload, the repository endpoints; the label
hierarchy in /tag and /labels. Real artifacts and ONNX Runtime throughout."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mltag_artifact import Artifact
from service.app import create_app
from service.settings import Settings
from tests.images import RED, YELLOW, solid

from .live import live_server

PNG = {"headers": {"content-type": "image/png"}}


def add_version(repo: Path, model: str, version: int, source: Artifact, **manifest: Any) -> Path:
    """Copy an artifact in as DIR/<model>/<version>/, with manifest fields changed. Written
    under a temporary name and renamed, as a deployment should."""
    tmp = repo / model / f".{version}.tmp"
    shutil.copytree(source.directory, tmp)
    raw = json.loads((tmp / "manifest.json").read_text())
    raw.update(manifest)
    (tmp / "manifest.json").write_text(json.dumps(raw))
    final = repo / model / str(version)
    tmp.rename(final)
    return final


def low_thresholds(artifact: Artifact) -> dict[str, Any]:
    """Every label at threshold 0: a version whose answers are recognisable (all 6 tags)."""
    return {"thresholds": [0.0] * len(artifact.manifest.labels)}


@pytest.fixture
def repo(tmp_path: Path, demo_artifact: Artifact) -> Path:
    root = tmp_path / "repo"
    add_version(root, "colours", 1, demo_artifact)
    add_version(root, "shades", 1, demo_artifact, **low_thresholds(demo_artifact))
    return root


@pytest.fixture
def client(repo: Path) -> Iterator[TestClient]:
    settings = Settings(model_repository=repo, default_model="colours")
    with TestClient(create_app(settings)) as c:
        yield c


def tag(client: Any, **params: str) -> Any:
    return client.post("/tag", content=solid(RED), params=params, **PNG)


def test_two_models_in_one_process(client: TestClient) -> None:
    default = tag(client)
    assert default.status_code == 200
    assert default.json()["model"] == {"name": "colours", "version": "1"}
    shades = tag(client, model="shades")
    assert shades.json()["model"] == {"name": "shades", "version": "1"}
    assert len(shades.json()["results"][0]["tags"]) == 6  # its own thresholds
    assert len(default.json()["results"][0]["tags"]) < 6
    missing = tag(client, model="nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert tag(client, model="shades", version="9").status_code == 404
    assert client.get("/labels", params={"model": "shades"}).json()["model"]["name"] == "shades"
    assert client.get("/v2/models/shades/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    tensor = {"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8", "data": [9] * 12288}
    v2 = client.post("/v2/models/shades/infer", json={"inputs": [tensor]})
    assert v2.json()["model_name"] == "shades" and v2.json()["model_version"] == "1"
    metrics = client.get("/metrics").text
    assert 'mltag_batch_size_count{model="shades",version="1"}' in metrics
    assert 'mltag_batch_size_count{model="colours",version="1"}' in metrics


def test_explicit_load_swaps_versions_and_unload(
    client: TestClient, repo: Path, demo_artifact: Artifact
) -> None:
    assert client.post("/v2/repository/models/colours/load").json() == {
        "name": "colours", "version": "1"}  # fmt: skip
    add_version(repo, "colours", 2, demo_artifact, **low_thresholds(demo_artifact))
    assert tag(client).json()["model"]["version"] == "1"  # nothing happens until asked
    loaded = client.post("/v2/repository/models/colours/load")
    assert loaded.status_code == 200 and loaded.json()["version"] == "2"
    after = tag(client)
    assert after.json()["model"]["version"] == "2"
    assert len(after.json()["results"][0]["tags"]) == 6  # computed by version 2
    index = client.post("/v2/repository/index").json()
    assert {"name": "colours", "state": "READY", "version": "2"} in index
    assert client.post("/v2/repository/models/shades/unload").status_code == 200
    assert tag(client, model="shades").status_code == 404
    assert {"name": "shades", "state": "UNAVAILABLE", "reason": "unloaded"} in (
        client.post("/v2/repository/index").json()
    )
    refused = client.post("/v2/repository/models/colours/unload")
    assert refused.status_code == 400 and "default model" in refused.json()["error"]
    assert client.post("/v2/repository/models/shades/load").json()["version"] == "1"
    assert tag(client, model="shades").status_code == 200


def test_a_broken_version_is_never_served(
    client: TestClient, repo: Path, demo_artifact: Artifact
) -> None:
    broken = add_version(repo, "colours", 2, demo_artifact)
    (broken / "model.onnx").write_bytes(b"not a model")
    r = client.post("/v2/repository/models/colours/load")
    assert r.status_code == 400
    assert "version 2 failed to load" in r.json()["error"] and "sha256" in r.json()["error"]
    assert tag(client).json()["model"]["version"] == "1"  # the old one keeps serving
    row = next(r for r in client.post("/v2/repository/index").json() if r["name"] == "colours")
    assert row["state"] == "READY" and row["version"] == "1" and "sha256" in row["reason"]
    assert 'mltag_model_load_failures_total{model="colours"} 1.0' in client.get("/metrics").text


def test_pinned_versions_and_startup_refusals(repo: Path, demo_artifact: Artifact) -> None:
    from service.cli import main

    add_version(repo, "colours", 2, demo_artifact)
    pinned = Settings(model_repository=repo, default_model="colours", model_versions={"colours": 1})
    with TestClient(create_app(pinned)) as c:
        assert tag(c).json()["model"]["version"] == "1"
    assert main(["--model-repository", str(repo), "--default-model", "nope"]) == 2
    assert main(["--model-repository", str(repo / "missing")]) == 2
    assert main(["--model-repository", str(repo), "--model-versions", '{"colours": 7}']) == 2


def test_repository_endpoints_need_the_api_key(repo: Path) -> None:
    settings = Settings(model_repository=repo, default_model="colours", api_key="k")
    with TestClient(create_app(settings)) as c:
        assert c.post("/v2/repository/index").status_code == 401
        ok = c.post("/v2/repository/index", headers={"x-api-key": "k"})
        assert ok.status_code == 200 and len(ok.json()) == 2
        assert c.post("/v2/repository/models/colours/load").status_code == 401


@pytest.mark.integration
def test_a_new_version_dropped_in_under_load_fails_no_request(
    repo: Path, demo_artifact: Artifact, tmp_path: Path
) -> None:
    """Polling every 0.2 s, clients tagging all along: a new version is picked up within the
    poll interval, every response is 200 and names the version whose thresholds computed it,
    and a broken version afterwards changes nothing but a logged, counted error."""
    env = {"MLTAG_MODEL_REPOSITORY": str(repo), "MLTAG_DEFAULT_MODEL": "colours",
           "MLTAG_REPOSITORY_POLL_S": "0.2"}  # fmt: skip
    with live_server(env=env, log_dir=tmp_path) as server:
        seen: list[tuple[int, str, int]] = []
        stop = threading.Event()

        def client_loop() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/tag", content=solid(YELLOW), **PNG)
                    body = r.json()
                    tags = len(body["results"][0]["tags"]) if r.status_code == 200 else -1
                    seen.append((r.status_code, body.get("model", {}).get("version", ""), tags))

        threads = [threading.Thread(target=client_loop) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        add_version(repo, "colours", 2, demo_artifact, **low_thresholds(demo_artifact))
        t0 = time.monotonic()
        while not any(v == "2" for _, v, _ in seen[-4:]):
            assert time.monotonic() - t0 < 10, "version 2 never served"
            time.sleep(0.05)
        switched_in = time.monotonic() - t0
        broken = add_version(repo, "colours", 3, demo_artifact)
        (broken / "model.onnx").write_bytes(b"truncated")
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        metrics = httpx.get(server.url + "/metrics").text
        log = server.log()
    assert {status for status, _, _ in seen} == {200}, Counter(s for s, _, _ in seen)
    assert switched_in < 3
    one = {tags for _, v, tags in seen if v == "1"}
    two = {tags for _, v, tags in seen if v == "2"}
    assert one and two and max(one) < 6 and two == {6}  # each named version computed its answer
    assert seen[-1][1] == "2"  # the broken version 3 was never served
    assert 'mltag_model_load_failures_total{model="colours"} 1.0' in metrics  # counted once
    assert "colours version 3 not served" in log


HIERARCHY = {
    "label_info": [
        {"parents": [], "category": "hue"},  # red
        {"parents": [], "category": "hue"},  # green
        {"parents": [], "category": "hue"},  # blue
        {"parents": ["bright"], "aliases": ["gold"], "category": "hue"},  # yellow
        {"parents": [], "category": "tone"},  # bright
        {"parents": [], "category": "tone"},  # dark
    ],
    "thresholds": [0.5, 0.5, 0.5, 0.5, 0.99, 0.5],  # `bright` only via its child
}


def test_label_hierarchy_in_tag_and_labels(tmp_path: Path, demo_artifact: Artifact) -> None:
    root = tmp_path / "repo"
    add_version(root, "colours", 1, demo_artifact, **HIERARCHY)
    with TestClient(create_app(Settings(model_repository=root))) as c:

        def tags(**params: str) -> list[dict[str, Any]]:
            r = c.post("/tag", content=solid(YELLOW), params=params, **PNG)
            assert r.status_code == 200, r.text
            result: list[dict[str, Any]] = r.json()["results"][0]["tags"]
            return result

        plain = tags()
        assert [t["label"] for t in plain] == ["yellow"] and plain[0]["parents"] == ["bright"]
        with_parents = tags(include_parents="true")
        assert [t["label"] for t in with_parents] == ["yellow", "bright"]
        assert with_parents[1]["score"] >= with_parents[0]["score"]  # its best descendant's
        assert tags(include_parents="true", categories="tone")[0]["label"] == "bright"
        assert tags(include_parents="true", exclude_labels="yellow,dark")[0]["label"] == "bright"
        assert tags(include_labels="red") == []
        bad = c.post("/tag", content=solid(RED), params={"include_labels": "purple"}, **PNG)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_label"
        bad = c.post("/tag", content=solid(RED), params={"categories": "smell"}, **PNG)
        assert bad.status_code == 422 and "unknown categories" in bad.json()["error"]["message"]
        labels = {x["name"]: x for x in c.get("/labels").json()["labels"]}
        assert labels["yellow"]["parents"] == ["bright"]
        assert labels["yellow"]["aliases"] == ["gold"] and labels["yellow"]["category"] == "hue"


def test_models_without_a_hierarchy_answer_as_before(client: TestClient) -> None:
    tag_ = tag(client).json()["results"][0]["tags"][0]
    assert set(tag_) == {"label", "score"}  # no parents key at all
    entry = client.get("/labels").json()["labels"][0]
    assert set(entry) == {"index", "name", "threshold"}
