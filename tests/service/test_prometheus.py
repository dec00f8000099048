"""A real Prometheus server scrapes the real service; series arrive through its query API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mltag_artifact import Artifact
from tests.images import RED, solid

from .live import free_port, live_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
]


def _query(url: str, promql: str) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    result: list[dict[str, object]] = r.json()["data"]["result"]
    return result


def test_prometheus_scrapes_request_batch_and_latency_series(
    demo_artifact: Artifact, tmp_path: Path
) -> None:
    env = {"MLTAG_ARTIFACT_DIR": str(demo_artifact.directory), "MLTAG_MAX_DELAY_MS": "5"}
    with live_server(env=env, log_dir=tmp_path) as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: mltag\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
        )
        prom_port = free_port()
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        prom_url = f"http://127.0.0.1:{prom_port}"
        try:
            body = solid(RED)
            for _ in range(30):
                r = httpx.post(server.url + "/tag", content=body,
                               headers={"content-type": "image/png"})  # fmt: skip
                assert r.status_code == 200
            deadline = time.monotonic() + 60
            wanted = {
                "requests": 'mltag_request_duration_seconds_count{endpoint="/tag"}',
                "batches": "mltag_batch_size_count",
                "latency": "histogram_quantile(0.99, sum by (le) "
                "(mltag_request_duration_seconds_bucket))",
                "model": "mltag_model_info",
            }
            found: dict[str, list[dict[str, object]]] = {}
            while time.monotonic() < deadline and len(found) < len(wanted):
                time.sleep(1)
                for name, promql in wanted.items():
                    try:
                        if result := _query(prom_url, promql):
                            found[name] = result
                    except httpx.HTTPError:
                        pass  # Prometheus still starting
            assert set(found) == set(wanted), f"missing series: {set(wanted) - set(found)}"
            requests = found["requests"][0]["value"]
            assert isinstance(requests, list)
            assert float(requests[1]) == 30
            assert found["model"][0]["metric"]["model"] == "colour-demo"  # type: ignore[index]
        finally:
            prom.terminate()
            prom.wait(30)
