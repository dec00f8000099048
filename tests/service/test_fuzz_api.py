"""Schema-driven fuzzing: schemathesis generates requests from the service's own OpenAPI
document (every route, /v2 infer included) against the real process and model; none may get a
5xx but the documented 504 for a client's tiny `timeout_ms`. Examples are bounded so the
default suite stays quick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mltag_artifact import Artifact

from .live import LiveServer, live_server

pytestmark = pytest.mark.integration

MODEL = "colour-demo"


@pytest.fixture(scope="module")
def fuzzed_server(
    demo_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_REQUEST_TIMEOUT_S": "10"}
    with live_server(env=env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


def fuzz(operation: Any, url: str) -> set[int]:
    """Run generated requests for one operation, valid (positive) and schema-violating
    (negative) ones; the statuses seen."""
    statuses: set[int] = set()

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure is reproducible
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode)))
    def call(case: Any) -> None:
        if "name" in (case.path_parameters or {}):
            case.path_parameters["name"] = MODEL  # reach the body parsing, not only a 404
        response = case.call(base_url=url, timeout=15)
        statuses.add(response.status_code)
        if response.status_code >= 500:  # only a client's own tiny timeout_ms may end so
            documented = response.status_code == 504 and "deadline_exceeded" in response.text
            assert documented, (
                f"{case.as_curl_command()}\n-> {response.status_code} {response.text}"
            )

    call()
    return statuses


def test_no_server_errors(fuzzed_server: LiveServer) -> None:
    """Each operation of the schema in turn (schemathesis drives the generation; its pytest
    plugin does not work with this pytest), with /v2's {name} set to the served model."""
    schema = schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    seen = {op.label: fuzz(op, fuzzed_server.url) for op in operations}
    infer = seen["POST /v2/models/{name}/infer"]
    assert infer & {400, 422}, infer  # generated bodies reached the request parsing
    assert seen["POST /tag"] - {503, 504}, seen["POST /tag"]
