"""The API through the real app (lifespan, batcher, ONNX Runtime) on the demo colour model."""

from __future__ import annotations

import base64
import inspect
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mltag_artifact import Artifact, Manifest
from mltag_artifact.runner import ModelLoadError
from service.app import create_app
from service.settings import Settings
from tests.images import BLUE, GREEN, RED, encode, solid

from .conftest import ClientFactory

LABELS = ["red", "green", "blue", "yellow", "bright", "dark"]


def tags_of(result: dict[str, Any]) -> list[str]:
    return [t["label"] for t in result["tags"]]


def test_multipart_several_images(client: TestClient) -> None:
    files = [("image", ("r.png", solid(RED), "image/png")),
             ("image", ("b.jpg", solid(BLUE, fmt="JPEG"), "image/jpeg"))]  # fmt: skip
    r = client.post("/tag", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "colour-demo", "version": "1.0.0"}
    first, second = body["results"]
    assert (first["index"], first["filename"], first["error"]) == (0, "r.png", None)
    assert tags_of(first) == ["red"]
    assert tags_of(second) == ["blue"]
    scores = [t["score"] for t in first["tags"]]
    assert scores == sorted(scores, reverse=True)
    assert r.headers["x-request-id"]


def test_raw_body_and_json_base64(client: TestClient) -> None:
    r = client.post("/tag", content=solid(GREEN), headers={"content-type": "image/png",
                                                           "x-filename": "g.png"})  # fmt: skip
    assert tags_of(r.json()["results"][0]) == ["green"]
    assert r.json()["results"][0]["filename"] == "g.png"
    payload = {"images": [{"b64": base64.b64encode(solid(RED)).decode(), "filename": "x"}],
               "all_scores": True}  # fmt: skip
    r = client.post("/tag", json=payload)
    result = r.json()["results"][0]
    assert tags_of(result) == ["red"]
    assert list(result["scores"]) == LABELS
    assert result["scores"]["red"] > 0.9 > result["scores"]["green"]


def test_query_string_options_are_parsed_from_text(client: TestClient) -> None:
    img = {"content": solid(RED), "headers": {"content-type": "image/png"}}
    r = client.post("/tag?all_scores=true&top_k=1&min_score=0&unknown=x", **img)
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert len(result["tags"]) == 1 and list(result["scores"]) == LABELS
    assert "scores" not in client.post("/tag?all_scores=false", **img).json()["results"][0]
    bad = [("top_k=two", "top_k"), ("min_score=high", "min_score"),
           ("all_scores=maybe", "all_scores"), ("timeout_ms=-5", "timeout_ms")]  # fmt: skip
    for query, name in bad:
        r = client.post(f"/tag?{query}", **img)
        assert r.status_code == 422, query
        assert r.json()["error"]["code"] == "invalid_request"
        assert r.json()["error"]["message"].startswith(f"{name}: "), r.text


def test_options_override_thresholds(client: TestClient) -> None:
    img = {"content": solid((200, 190, 20)), "headers": {"content-type": "image/png"}}
    yellow = client.post("/tag", **img).json()["results"][0]
    assert tags_of(yellow)[0] == "yellow"
    everything = client.post("/tag", params={"min_score": 0}, **img).json()["results"][0]
    assert sorted(tags_of(everything)) == sorted(LABELS)
    top2 = client.post("/tag", params={"min_score": 0, "top_k": 2}, **img).json()["results"][0]
    assert tags_of(top2) == tags_of(everything)[:2]
    per_label = client.post(
        "/tag", params={"thresholds": json.dumps({"yellow": 1.0, "dark": 0.0})}, **img
    ).json()["results"][0]
    assert "yellow" not in tags_of(per_label)
    assert "dark" in tags_of(per_label)


def _multipart_body(boundary: str, payload: bytes) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + payload  # no closing boundary


BAD_INPUTS = [
    # (id, request kwargs, status, error code)
    (
        "empty raw body",
        {"content": b"", "headers": {"content-type": "image/png"}},
        400,
        "empty_body",
    ),
    (
        "not an image",
        {"content": b"hello", "headers": {"content-type": "image/jpeg"}},
        422,
        "invalid_image",
    ),
    (
        "truncated jpeg",
        {
            "content": solid(RED, (300, 300), "JPEG")[:900],
            "headers": {"content-type": "image/jpeg"},
        },
        422,
        "invalid_image",
    ),
    (
        "unsupported format",
        {
            "content": encode(__import__("PIL.Image").Image.new("RGB", (8, 8)), "ICO"),
            "headers": {"content-type": "image/x-icon"},
        },
        415,
        "unsupported_format",
    ),
    (
        "too many pixels",
        {"content": solid(RED, (3000, 2000)), "headers": {"content-type": "image/png"}},
        413,
        "image_too_large",
    ),
    (
        "wrong content type",
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "no content type",
        {"content": b"x", "headers": {"content-type": ""}},
        415,
        "unsupported_media_type",
    ),
    (
        "malformed multipart",
        {
            "content": b"garbage without a boundary",
            "headers": {"content-type": "multipart/form-data; boundary=zz"},
        },
        400,
        "bad_request",
    ),
    (
        "multipart missing boundary",
        {"content": b"abc", "headers": {"content-type": "multipart/form-data"}},
        400,
        "bad_request",
    ),
    (
        "truncated multipart",
        {
            "content": _multipart_body("zz", b"abc"),
            "headers": {"content-type": "multipart/form-data; boundary=zz"},
        },
        400,
        "no_image",
    ),
    (
        "multipart without image field",
        {"files": [("photo", ("a.png", solid(RED), "image/png"))]},
        400,
        "no_image",
    ),
    (
        "multipart text field",
        {"data": {"image": "not a file"}, "files": [("other", ("a.png", b"x", "image/png"))]},
        400,
        "no_image",
    ),
    (
        "malformed json",
        {"content": b'{"images": [', "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    ("json without images", {"json": {"top_k": 3}}, 422, "invalid_request"),
    ("json empty images", {"json": {"images": []}}, 422, "invalid_request"),
    (
        "json unknown field",
        {"json": {"images": [{"b64": "aGk="}], "colour": 1}},
        422,
        "invalid_request",
    ),
    ("bad base64", {"json": {"images": [{"b64": "%%%not base64%%%"}]}}, 400, "invalid_base64"),
    (
        "json bad image",
        {"json": {"images": [{"b64": base64.b64encode(b"junk").decode()}]}},
        422,
        "invalid_image",
    ),
    (
        "too many images",
        {"files": [("image", ("a.png", solid(RED), "image/png"))] * 17},
        422,
        "too_many_images",
    ),
    (
        "unknown label",
        {
            "params": {"thresholds": '{"cat": 0.5}'},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "unknown_label",
    ),
    (
        "threshold out of range",
        {
            "params": {"thresholds": '{"red": 3}'},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "threshold null",
        {
            "params": {"thresholds": '{"red": null}'},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "threshold bool",
        {
            "params": {"thresholds": '{"red": true}'},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "threshold string",
        {
            "params": {"thresholds": '{"red": "0.3"}'},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "json top_k bool",
        {"json": {"images": [{"b64": "aGk="}], "top_k": True}},
        422,
        "invalid_request",
    ),
    (
        "many multipart parts",
        {"files": [("image", ("a.png", solid(RED), "image/png"))] * 40},
        422,
        "too_many_images",
    ),
    (
        "thresholds not json",
        {
            "params": {"thresholds": "red=1"},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "min_score out of range",
        {
            "params": {"min_score": 1.5},
            "content": solid(RED),
            "headers": {"content-type": "image/png"},
        },
        422,
        "invalid_request",
    ),
    (
        "top_k zero",
        {"params": {"top_k": 0}, "content": solid(RED), "headers": {"content-type": "image/png"}},
        422,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(("kwargs", "status", "code"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])  # fmt: skip
def test_bad_input_table(
    make_client: ClientFactory, kwargs: dict[str, Any], status: int, code: str
) -> None:
    with make_client(max_image_pixels=5_000_000) as client:
        r = client.post("/tag", **kwargs)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code
        assert len(err["message"]) > 10
        # the service is still healthy afterwards
        assert client.post("/tag", content=solid(RED), headers={"content-type": "image/png"}
                           ).status_code == 200  # fmt: skip


def test_oversized_body_413(make_client: ClientFactory) -> None:
    with make_client(max_body_bytes=10_000) as client:
        big = solid(RED, (1000, 1000), "BMP")
        r = client.post("/tag", content=big, headers={"content-type": "image/bmp"})
        assert r.status_code == 413
        assert "exceeds the limit of 10000 bytes" in r.json()["error"]["message"]

        def chunks() -> Any:  # no Content-Length: the streaming limit must catch it
            for i in range(0, len(big), 4096):
                yield big[i : i + 4096]

        r = client.post("/tag", content=chunks(), headers={"content-type": "image/bmp"})
        assert r.status_code == 413


def test_one_bad_image_does_not_fail_the_batch(client: TestClient) -> None:
    files = [("image", ("ok.png", solid(RED), "image/png")),
             ("image", ("bad.jpg", b"garbage", "image/jpeg")),
             ("image", ("ok2.png", solid(BLUE), "image/png"))]  # fmt: skip
    r = client.post("/tag", files=files)
    assert r.status_code == 200
    res = r.json()["results"]
    assert tags_of(res[0]) == ["red"] and tags_of(res[2]) == ["blue"]
    assert res[1]["tags"] == [] and res[1]["error"]["code"] == "invalid_image"


def test_labels_and_health(client: TestClient) -> None:
    body = client.get("/labels").json()
    assert [label["name"] for label in body["labels"]] == LABELS
    assert all(label["threshold"] == pytest.approx(0.5) for label in body["labels"])
    assert body["model"]["execution_provider"] == "CPUExecutionProvider"
    batching = body["model"]["batching"]  # the plan made at load, from measured cost
    assert batching["workers"] >= 1 and str(batching["max_batch_size"]) in batching["ms_per_image"]
    assert body["model"]["preprocessing"]["input_dtype"] == "uint8"
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_exported(client: TestClient) -> None:
    client.post("/tag", content=solid(RED), headers={"content-type": "image/png"})
    client.post("/tag", content=b"x", headers={"content-type": "text/plain"})
    text = client.get("/metrics").text
    for needle in (
        'mltag_request_duration_seconds_count{endpoint="/tag",status_class="2xx"} 1.0',
        'mltag_request_duration_seconds_count{endpoint="/tag",status_class="4xx"} 1.0',
        "mltag_batch_size_count",
        "mltag_queue_wait_seconds_bucket",
        "mltag_inference_duration_seconds_bucket",
        "mltag_decode_duration_seconds_bucket",
        'mltag_queue_depth{model="colour-demo",version="1.0.0"} 0.0',
        'mltag_images_processed_total{model="colour-demo",outcome="ok",version="1.0.0"} 1.0',
        'mltag_requests_rejected_total{reason="queue_full"} 0.0',
        'mltag_model_info{model="colour-demo",provider="CPUExecutionProvider",version="1.0.0"}',
        "mltag_ready 1.0",
    ):
        assert needle in text, needle


def test_concurrent_requests_are_batched_and_mapped_back(make_client: ClientFactory) -> None:
    colours = {"red": RED, "green": GREEN, "blue": BLUE}
    jobs = [list(colours)[i % 3] for i in range(48)]
    # the configured cap as is (the measured plan may choose batches of 1-2 for this model)
    with make_client(max_batch_size=8, max_delay_ms=20, batch_tuning=False) as client:

        def send(name: str) -> str:
            r = client.post("/tag", content=solid(colours[name]),
                            headers={"content-type": "image/png"})  # fmt: skip
            return tags_of(r.json()["results"][0])[0]

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(send, jobs))
        assert got == jobs  # every response belongs to its own request
        metrics = client.get("/metrics").text
    count = _sample(metrics, "mltag_batch_size_count")
    total = _sample(metrics, "mltag_batch_size_sum")
    assert total == 48
    assert count < 48 / 2, f"expected batching; got {count} batches for 48 images"


def _sample(text: str, name: str) -> float:
    """The sum of a metric's series (they carry model and version labels)."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]  # fmt: skip
    if not values:
        raise AssertionError(f"{name} not found")
    return sum(values)


@contextmanager
def model_on_hold(client: TestClient) -> Iterator[threading.Event]:
    """Hold the real model's runs until the event is set (to fill the queue on purpose)."""
    batcher = client.app.state.mltag.default_model.batcher  # type: ignore[attr-defined]
    gate = threading.Event()
    real_run, real_one = batcher._run_batch, batcher.run_one

    def hold(run: Any) -> Any:
        def held(batch: Any) -> Any:
            gate.wait(30)
            return run(batch)

        return held

    batcher._run_batch, batcher.run_one = hold(real_run), hold(real_one)
    try:
        yield gate
    finally:
        gate.set()
        batcher._run_batch, batcher.run_one = real_run, real_one


def _post_red(client: TestClient, n: int = 1, **params: Any) -> Any:
    files = [("image", (f"{i}.png", solid(RED), "image/png")) for i in range(n)]
    return client.post("/tag", files=files, params=params)


def _wait_for(predicate: Any, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition never became true"
        time.sleep(0.01)


def test_queue_full_is_429_with_retry_after(make_client: ClientFactory) -> None:
    settings = {
        "max_queue_size": 4,
        "max_images_per_request": 4,
        "max_batch_size": 1,
        "model_workers": 1,
    }
    with make_client(**settings) as client, model_on_hold(client) as gate:
        batcher = client.app.state.mltag.default_model.batcher  # type: ignore[attr-defined]
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(_post_red, client)  # in the (held) model
            _wait_for(lambda: batcher.running)
            queued = pool.submit(_post_red, client, 4)  # fills the queue exactly
            _wait_for(lambda: batcher.queue_depth == 4)
            t0 = time.monotonic()
            r = _post_red(client)
            refused_in = time.monotonic() - t0
            gate.set()
            assert running.result().status_code == 200
            assert queued.result().status_code == 200
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        assert refused_in < 0.5  # refused at once, not after waiting


def test_full_queue_sheds_before_the_body_is_parsed(make_client: ClientFactory) -> None:
    # Under overload a 429 must not cost a body parse: a malformed JSON body, which would be a
    # 400 with room in the queue, is refused with 429 while the queue is full, and the KServe
    # endpoint sheds the same way.
    settings = {
        "max_queue_size": 1,
        "max_images_per_request": 1,
        "max_batch_size": 1,
        "model_workers": 1,
    }
    bad_json = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    with make_client(**settings) as client, model_on_hold(client) as gate:
        assert client.post("/tag", **bad_json).status_code == 400  # room: parsed, refused
        batcher = client.app.state.mltag.default_model.batcher  # type: ignore[attr-defined]
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(_post_red, client)
            _wait_for(lambda: batcher.running)
            queued = pool.submit(_post_red, client)
            _wait_for(lambda: batcher.queue_depth == 1)
            shed = client.post("/tag", **bad_json)
            shed_v2 = client.post("/v2/models/colour-demo/infer", **bad_json)
            gate.set()
            assert running.result().status_code == queued.result().status_code == 200
        assert shed.status_code == 429 and shed.json()["error"]["code"] == "queue_full"
        assert int(shed.headers["retry-after"]) >= 1
        assert shed_v2.status_code == 429 and "capacity" in shed_v2.json()["error"]
        assert client.post("/tag", **bad_json).status_code == 400  # room again


def test_request_larger_than_the_room_left_is_429(make_client: ClientFactory) -> None:
    settings = {
        "max_queue_size": 4,
        "max_images_per_request": 4,
        "max_batch_size": 1,
        "model_workers": 1,
    }
    with make_client(**settings) as client, model_on_hold(client) as gate:
        batcher = client.app.state.mltag.default_model.batcher  # type: ignore[attr-defined]
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(_post_red, client)
            _wait_for(lambda: batcher.running)
            queued = pool.submit(_post_red, client, 3)  # one image of room left
            _wait_for(lambda: batcher.queue_depth == 3)
            r = _post_red(client, 2)  # all images or none
            one = pool.submit(_post_red, client, 1)
            _wait_for(lambda: batcher.queue_depth == 4)
            gate.set()
            assert running.result().status_code == queued.result().status_code == 200
            assert one.result().status_code == 200
        assert r.status_code == 429


def test_deadline_passes_while_queued_is_504(make_client: ClientFactory) -> None:
    with make_client(max_batch_size=1) as client, model_on_hold(client) as gate:
        batcher = client.app.state.mltag.default_model.batcher  # type: ignore[attr-defined]
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(_post_red, client)
            _wait_for(lambda: batcher.running)
            t0 = time.monotonic()
            r = _post_red(client, timeout_ms=200)
            waited = time.monotonic() - t0
            gate.set()
            assert running.result().status_code == 200
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "deadline_exceeded"
        assert 0.15 < waited < 2
        assert 'reason="deadline"} 1.0' in client.get("/metrics").text


def test_short_deadline_beats_batching_delay(make_client: ClientFactory) -> None:
    # The batcher flushes early rather than let a waiting image miss its deadline.
    with make_client(max_delay_ms=2000, max_batch_size=8) as client:
        t0 = time.monotonic()
        r = _post_red(client, timeout_ms=300)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 1.5


def test_api_key(make_client: ClientFactory) -> None:
    with make_client(api_key="s3cret") as client:
        img = {"content": solid(RED), "headers": {"content-type": "image/png"}}
        r = client.post("/tag", **img)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        ok = client.post("/tag", content=solid(RED),
                         headers={"content-type": "image/png", "x-api-key": "s3cret"})  # fmt: skip
        assert ok.status_code == 200
        bearer = client.get("/labels", headers={"authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        assert client.get("/labels", headers={"x-api-key": "wrong"}).status_code == 401
        for path in ("/livez", "/readyz", "/metrics"):  # probes and scrapers need no key
            assert client.get(path).status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json"):  # protected unless docs_public
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"x-api-key": "s3cret"}).status_code == 200
    with make_client(api_key="s3cret", docs_public=True) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200
        assert client.get("/labels").status_code == 401


def test_cors(make_client: ClientFactory) -> None:
    with make_client(cors_origins=["https://app.example"], api_key="k") as client:
        r = client.options("/tag", headers={"origin": "https://app.example",
                                            "access-control-request-method": "POST"})  # fmt: skip
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_request_id_is_echoed(client: TestClient) -> None:
    r = client.get("/labels", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.post("/tag", content=b"", headers={"content-type": "image/png",
                                                  "x-request-id": "req-9"})  # fmt: skip
    assert r.json()["request_id"] == "req-9"


def _copy_with_manifest(artifact: Artifact, tmp_path: Path, **changes: Any) -> Path:
    target = tmp_path / "art"
    shutil.copytree(artifact.directory, target)
    m = Manifest.model_validate_json((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(m.model_copy(update=changes).model_dump_json())
    return target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": [*LABELS, "purple"], "thresholds": [0.5] * 7},
         "model outputs 6 scores but the manifest lists 7 labels"),
        ({"onnx": "input_name"}, "manifest onnx.input_name 'pixels' is not a model input"),
    ],
    ids=["labels mismatch", "input name mismatch"],
)  # fmt: skip
def test_model_manifest_mismatch_refuses_to_start(
    demo_artifact: Artifact, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    if changes.get("onnx") == "input_name":
        changes = {"onnx": demo_artifact.manifest.onnx.model_copy(update={"input_name": "pixels"})}
    art = _copy_with_manifest(demo_artifact, tmp_path, **changes)
    app = create_app(Settings(artifact_dir=art))
    with pytest.raises(ModelLoadError, match=message), TestClient(app):
        pass


def test_require_gpu_refuses_on_cpu(demo_artifact_dir: Path) -> None:
    app = create_app(Settings(artifact_dir=demo_artifact_dir, require_gpu=True))
    with pytest.raises(ModelLoadError, match="no GPU provider"), TestClient(app):
        pass


def test_openapi_describes_the_real_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/tag", "/labels", "/livez", "/readyz", "/metrics", "/v2/models/{name}/infer"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/tag"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "image/*", "application/json"}
    assert "$ref" not in json.dumps(body)  # inlined: resolvable by any OpenAPI tool
    params = {p["name"] for p in spec["paths"]["/tag"]["post"]["parameters"]}
    assert params == {
        "top_k", "min_score", "thresholds", "all_scores", "timeout_ms", "model", "version",
        "include_parents", "include_labels", "exclude_labels", "categories", "explain",
        "explain_format",
    }  # fmt: skip
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        infer = spec["paths"][path]["post"]["requestBody"]["content"]
        assert set(infer) == {"application/json", "application/octet-stream"}
        assert "inputs" in infer["application/json"]["schema"]["properties"]
        assert "$ref" not in json.dumps(infer)
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}  # the exposition format, not JSON


def test_base64_data_uri_and_line_breaks_accepted(client: TestClient) -> None:
    wrapped = base64.encodebytes(solid(GREEN)).decode()  # with newlines every 76 chars
    payload = {"images": [{"b64": "data:image/png;base64," + wrapped}]}
    r = client.post("/tag", json=payload)
    assert r.status_code == 200, r.text
    assert tags_of(r.json()["results"][0]) == ["green"]


def test_refusals_carry_cors_headers(make_client: ClientFactory) -> None:
    with make_client(cors_origins=["https://app.example"], api_key="k") as client:
        r = client.get("/labels", headers={"origin": "https://app.example"})
        assert r.status_code == 401
        assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_head_probes(client: TestClient) -> None:
    assert client.head("/livez").status_code == 200
    assert client.head("/readyz").status_code == 200


def test_utf8_filename_header(client: TestClient) -> None:
    name = "café.png"
    headers = [(b"content-type", b"image/png"), (b"x-filename", name.encode())]  # raw UTF-8
    r = client.post("/tag", content=solid(RED), headers=headers)
    assert r.json()["results"][0]["filename"] == name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_queue_size": 2}, "max_queue_size (2) must be at least"),
        ({"api_key": ""}, "api_key is empty"),
    ],
)
def test_inconsistent_settings_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**overrides)


def test_log_lines_cannot_be_forged() -> None:
    from service.api.middleware import _printable

    assert _printable("/x\n2026 ERROR forged") == "/x\\n2026 ERROR forged"


def test_routes_never_hop_to_a_thread_pool() -> None:
    """FastAPI runs a plain `def` handler or dependency in its thread pool: a thread hop per
    request on the hot path (measured in benchmarks/RESULTS.md). Everything must be async."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from service.api import info, kserve, tag

    def sync_calls(dep: Dependant) -> list[str]:
        found = [] if dep.call is None or inspect.iscoroutinefunction(dep.call) else [dep.call]
        return [getattr(c, "__name__", repr(c)) for c in found] + [
            name for sub in dep.dependencies for name in sync_calls(sub)
        ]

    routers = (tag.router, info.router, kserve.router)  # what create_app includes
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert any(r.path == "/tag" for r in routes)
    offenders = {r.path: sync_calls(r.dependant) for r in routes if sync_calls(r.dependant)}
    assert offenders == {}


def test_a_huge_thresholds_map_is_refused_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work proportional to a JSON body (validation, the options merge, the label scan) runs in
    the worker pool, and a thresholds map larger than the label set is refused there: a
    13.6 MiB body of 900k keys once stalled /livez for 0.8 s."""
    from mltag_artifact.tagger import Tagger
    from service.api.schemas import TagJsonRequest

    threads: list[str] = []
    real_dump, real_unknown = TagJsonRequest.model_dump, Tagger.unknown_labels

    def dump(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_dump(self, *args, **kwargs)

    def unknown(self: Any, names: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_unknown(self, names)

    monkeypatch.setattr(TagJsonRequest, "model_dump", dump)
    monkeypatch.setattr(Tagger, "unknown_labels", unknown)
    image = base64.b64encode(solid(RED)).decode()
    ok = client.post("/tag", json={"images": [{"b64": image}], "thresholds": {"red": 0.2}})
    assert ok.status_code == 200, ok.text
    assert threads and threads[0].startswith("mltag-decode")  # merged and checked in the pool
    huge = {f"label-{i}": 0.5 for i in range(50_000)}
    threads.clear()
    r = client.post("/tag", json={"images": [{"b64": image}], "thresholds": huge})
    assert r.status_code == 422
    assert "has 50003 members" in r.json()["error"]["message"]  # counted before parsing
    assert threads == []  # refused by size before any scan or copy
    seven = dict(list(huge.items())[:7])
    r = client.post("/tag", json={"images": [{"b64": image}], "thresholds": seven})
    assert "thresholds has 7 entries; the model has 6 labels" in r.json()["error"]["message"]
    assert threads == []  # refused by count before any scan or copy
    query = client.post("/tag", params={"thresholds": json.dumps(dict(list(huge.items())[:7]))},
                        files={"image": ("a.png", solid(RED), "image/png")})  # fmt: skip
    assert query.status_code == 422 and "7 entries" in query.json()["error"]["message"]


def test_image_shape_limits_and_decode_budget_reach_the_api(make_client: ClientFactory) -> None:
    with make_client(max_image_side=400, max_aspect_ratio=10, decode_memory_mb=1) as client:

        def post(size: tuple[int, int]) -> Any:
            return client.post("/tag", content=solid(RED, size=size, fmt="PNG"),
                               headers={"content-type": "image/png"})  # fmt: skip

        side = post((500, 100))
        assert side.status_code == 413 and side.json()["error"]["code"] == "image_too_large"
        assert "400 pixels on the longer side" in side.json()["error"]["message"]
        aspect = post((300, 20))
        assert aspect.status_code == 422
        assert aspect.json()["error"]["code"] == "extreme_aspect_ratio"
        memory = post((400, 350))  # 140k px x 8 bytes > 1 MiB: can never fit the budget
        assert memory.status_code == 413 and "decode memory budget" in memory.text
        assert post((200, 150)).status_code == 200
