"""The KServe v2 / Open Inference Protocol subset, driven by the real `tritonclient[http]`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from mltag_artifact import Artifact

from .live import LiveServer, live_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_MAX_DELAY_MS": "5"}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def colour_batch(*colours: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.full((64, 64, 3), c, dtype=np.uint8) for c in colours])


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("colour-demo")
    meta = client.get_model_metadata("colour-demo")
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 6]},
        {"name": "heatmaps", "datatype": "FP32", "shape": [-1, 6, 8, 8]},  # the explain graph
    ]
    assert client.get_server_metadata()["name"] == "mltag"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_batch(client: triton.InferenceServerClient, binary: bool) -> None:
    batch = colour_batch((230, 10, 10), (10, 10, 230), (250, 250, 250))
    inp = triton.InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=binary)
    out = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer("colour-demo", [inp], outputs=[out], request_id="r1")
    probs = result.as_numpy("probabilities")
    assert probs.shape == (3, 6)
    labels = ["red", "green", "blue", "yellow", "bright", "dark"]
    assert [labels[i] for i in probs.argmax(axis=1)] == ["red", "blue", "bright"]
    assert result.get_response()["id"] == "r1"


def test_infer_default_outputs(client: triton.InferenceServerClient) -> None:
    batch = colour_batch((10, 200, 10))
    inp = triton.InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    probs = client.infer("colour-demo", [inp]).as_numpy("probabilities")
    assert probs is not None
    assert probs[0, 1] > 0.9  # green


def test_errors_reach_the_client(client: triton.InferenceServerClient) -> None:
    batch = colour_batch((1, 2, 3))
    inp = triton.InferInput("image", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [inp])
    wrong = triton.InferInput("image", [1, 32, 32, 3], "UINT8")
    wrong.set_data_from_numpy(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(InferenceServerException, match=r"expected \[batch, 64, 64, 3\]"):
        client.infer("colour-demo", [wrong])
    fp = triton.InferInput("image", [1, 64, 64, 3], "FP32")
    fp.set_data_from_numpy(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="expected 'UINT8'"):
        client.infer("colour-demo", [fp])


def test_kserve_json_by_hand(server: LiveServer) -> None:
    body = {"inputs": [{"name": "image", "shape": [1, 64, 64, 3], "datatype": "UINT8",
                        "data": [200] * (64 * 64 * 3)}]}  # fmt: skip
    r = httpx.post(f"{server.url}/v2/models/colour-demo/versions/1.0.0/infer", json=body)
    assert r.status_code == 200
    out = r.json()["outputs"][0]
    assert out["shape"] == [1, 6]
    assert len(out["data"]) == 6
    r = httpx.post(f"{server.url}/v2/models/colour-demo/infer", content=b"{not json")
    assert r.status_code == 400
    assert "malformed" in r.json()["error"]


def test_metrics_count_kserve_batches(server: LiveServer, tmp_path: Path) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    assert 'endpoint="/v2/models/{name}/infer"' in text


def test_versioned_model_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("colour-demo", model_version="1.0.0")
    assert not client.is_model_ready("colour-demo", model_version="9.9.9")


def _json_infer(server: LiveServer, data: object, shape: object = None, **extra: object) -> Any:
    spec = {"name": "image", "shape": shape or [1, 64, 64, 3], "datatype": "UINT8", "data": data}
    body = json.dumps({"inputs": [spec], **extra})  # allows Infinity/NaN, as clients may send
    return httpx.post(f"{server.url}/v2/models/colour-demo/infer", content=body)


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ([300] * 12288, None, "integers in 0..255"),
        ([-1] * 12288, None, "integers in 0..255"),
        ([1.5] * 12288, None, "integers in 0..255"),
        ([float("inf")] * 12288, None, "integers in 0..255"),
        ([10**400] * 12288, None, "not a list of numbers"),
        ([1] * 12288, [True, 64, 64, 3], "expected [batch, 64, 64, 3]"),
        ([[1, 2], [3]], None, "not a list of numbers"),
        ([1] * 10, None, "needs 12288"),
        (["1"] * 12288, None, "not a list of numbers"),
        ([True] * 12288, None, "not a list of numbers"),
        ([None] * 12288, None, "not a list of numbers"),
    ],
    ids=[
        "300",
        "-1",
        "1.5",
        "1e400",
        "huge int",
        "bool dim",
        "ragged",
        "short",
        "numeric strings",
        "booleans",
        "nulls",
    ],
)
def test_bad_tensors_are_400_not_500(
    server: LiveServer, data: object, shape: object, message: str
) -> None:
    r = _json_infer(server, data, shape)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_binary_output_flag_must_be_a_boolean(server: LiveServer) -> None:
    r = _json_infer(server, [0] * 12288, parameters={"binary_data_output": "false"})
    assert r.status_code == 200
    assert "data" in r.json()["outputs"][0]  # "false" is not true: JSON output


def test_float_model_rejects_nan(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from model_training.demo import write_demo_artifact
    from service.app import create_app
    from service.settings import Settings

    art = write_demo_artifact(tmp_path / "f32", layout="NCHW", input_dtype="float32")
    with TestClient(create_app(Settings(artifact_dir=art.directory))) as c:
        body = {"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "FP32",
                            "data": [float("nan")] + [0.0] * (3 * 64 * 64 - 1)}]}  # fmt: skip
        r = c.post("/v2/models/colour-demo/infer", content=json.dumps(body))
        assert r.status_code == 400
        assert "NaN" in r.json()["error"]
        body["inputs"][0]["data"] = [128.0] * (3 * 64 * 64)  # type: ignore[index]
        ok = c.post("/v2/models/colour-demo/infer", json=body)
        assert ok.status_code == 200


@pytest.mark.parametrize("outputs", [5, True, "probabilities", [5], {"name": "probabilities"}])
def test_malformed_outputs_are_400(server: LiveServer, outputs: object) -> None:
    r = _json_infer(server, [0] * 12288, outputs=outputs)
    assert r.status_code == 400, r.text
    assert "outputs must be a list of objects" in r.json()["error"]


def test_deeply_nested_json_is_400(server: LiveServer) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, '{"inputs": ' + deep + "}"):
        r = httpx.post(f"{server.url}/v2/models/colour-demo/infer", content=body)
        assert r.status_code == 400, r.text
        assert "nested too deeply" in r.json()["error"]


@pytest.mark.parametrize("value", [b"\xb2", b"12\xb3", b"-1", b""])
def test_header_length_must_be_ascii_digits(server: LiveServer, value: bytes) -> None:
    """'²' passes str.isdigit() but not int(): a 400, never a 500."""
    body = json.dumps({"inputs": []}).encode()
    r = httpx.post(
        f"{server.url}/v2/models/colour-demo/infer",
        content=body,
        headers=[(b"Inference-Header-Content-Length", value)],
    )
    assert r.status_code == 400, r.text
    assert "Inference-Header-Content-Length" in r.json()["error"]


def test_more_json_values_than_a_batch_can_hold_is_400_before_parsing(server: LiveServer) -> None:
    limit = 16 * 64 * 64 * 3  # max(batch, images per request) x the sample shape
    r = _json_infer(server, [0] * (limit + 2000))
    assert r.status_code == 400, r.text
    assert "more values than a batch can" in r.json()["error"]
