"""Prometheus from the compose file (its config in deploy/prometheus/) scraping the service
container, and every Grafana dashboard query evaluated against it through Prometheus' HTTP
API after some traffic. (Grafana itself is not run: its image cannot be had without a
registry; tests/deploy/test_monitoring.py checks its provisioning offline.)

Where no registry is reachable, PROMETHEUS_IMAGE names a stand-in built from Debian's
prometheus package (.ci/docker.sh); the compose file is otherwise used as it is."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import CLIPART, Service, Stack
from .engine import REPO

pytestmark = pytest.mark.docker

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
# Queries that may rightly be empty after healthy traffic: the 5xx ratio has no 5xx series.
MAY_BE_EMPTY = ('status_class="5xx"',)


def _scrape_interval_s() -> float:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mltag"]
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    return float(interval.rstrip("s"))


def _grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """Grafana's substitution for what the dashboards use: `$__rate_interval` (at least four
    scrape intervals, per Grafana's definition, with the data source's timeInterval) and
    the dashboard's own variables (their `allValue`, as with `All` selected)."""
    source = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    scrape = float(source["jsonData"]["timeInterval"].rstrip("s"))
    out = expr.replace("$__rate_interval", f"{int(4 * scrape)}s")
    for name, value in variables.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in out, f"unsubstituted variable in {expr}"
    return out


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target, with Grafana's substitutions."""
    dashboard = json.loads(path.read_text())
    variables = {
        v["name"]: v.get("allValue", "")
        for v in dashboard.get("templating", {}).get("list", [])
        if v["type"] == "query"
    }
    return [
        (panel["title"], _grafana_expr(target["expr"], variables))
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result


class Traffic:
    """Real images tagged in a loop (and one rejected request per round) until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        files = [("image", (p.name, p.read_bytes(), "image/png")) for p in CLIPART]
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                r = client.post(self.url + "/tag", files=files)
                if r.status_code != 200:
                    self.errors.append(r.text[:200])
                # 400 empty_body: a rejection for the dashboard's rejections panel
                client.post(self.url + "/tag", content=b"", headers={"content-type": "image/png"})
                self.rounds += 1
                self.stop.wait(0.2)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def prometheus(stack: Stack, service: Service) -> Prometheus:
    """`docker compose up -d prometheus` in the service's project; waits for its API."""
    stack("up", "--detach", "--no-build", "prometheus")
    url = f"http://127.0.0.1:{stack.env['PROMETHEUS_PUBLISH_PORT']}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return Prometheus(url)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus not ready after 60 s\n{stack.logs()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, service: Service) -> Iterator[Prometheus]:
    """Prometheus after several scrapes under traffic (which keeps running meanwhile)."""
    scrape = _scrape_interval_s()
    with Traffic(service.url) as traffic:
        deadline = time.monotonic() + 6 * scrape + 30
        # rate() needs two samples of a series that grew in between: wait for four scrapes of
        # the counters that traffic moves.
        scrapes = 'count_over_time(mltag_images_processed_total{outcome="ok"}[1m])'
        while True:
            samples = prometheus.query(scrapes)
            if samples and float(samples[0]["value"][1]) >= 4:
                break
            assert time.monotonic() < deadline, f"no scrapes with traffic: {samples}"
            time.sleep(1)
        assert traffic.rounds > 0 and not traffic.errors, traffic.errors[:3]
        yield prometheus


def test_prometheus_scrapes_the_service(prometheus: Prometheus) -> None:
    deadline = time.monotonic() + 3 * _scrape_interval_s() + 10
    while True:
        targets = prometheus.api("targets")["activeTargets"]
        mltag = [t for t in targets if t["labels"]["job"] == "mltag"]
        if mltag and mltag[0]["health"] == "up":
            break
        assert time.monotonic() < deadline, targets
        time.sleep(1)
    assert mltag[0]["scrapeUrl"] == "http://mltag:8000/metrics"
    assert prometheus.query("up{job='mltag'}")[0]["value"][1] == "1"


def test_dashboards_exist() -> None:
    assert DASHBOARDS
    assert sum(len(_queries(p)) for p in DASHBOARDS) >= 10


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_evaluates_with_data(scraped: Prometheus, path: Path) -> None:
    """Each panel query is valid PromQL for this Prometheus, and each one that healthy traffic
    should feed (all but MAY_BE_EMPTY) returns data."""
    empty = []
    for title, expr in _queries(path):
        result = scraped.query(expr)
        if not result and not any(marker in expr for marker in MAY_BE_EMPTY):
            empty.append(f"{title}: {expr}")
        for sample in result:
            value = sample["value"][1]
            assert value not in ("NaN", "+Inf", "-Inf"), (title, expr, sample)
    assert not empty, "queries without data after traffic:\n" + "\n".join(empty)


def test_key_panels_show_the_traffic(scraped: Prometheus, service: Service) -> None:
    (images,) = scraped.query('sum(rate(mltag_images_processed_total{outcome="ok"}[1m]))')
    assert float(images["value"][1]) > 0
    (info,) = scraped.query("mltag_model_info")
    model = httpx.get(service.url + "/labels", timeout=5).json()["model"]
    assert info["metric"]["provider"] == model["execution_provider"] == "CPUExecutionProvider"
    assert (info["metric"]["model"], info["metric"]["version"]) == (model["name"], model["version"])
    (ready,) = scraped.query("sum(mltag_ready)")
    assert ready["value"][1] == "1"
    rejected = scraped.query("sum by (reason) (increase(mltag_requests_rejected_total[1m])) > 0")
    assert rejected, "the rejected empty bodies are not counted"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables_resolve(scraped: Prometheus, path: Path) -> None:
    """Query variables (Grafana's label_values(metric, label)) find values."""
    dashboard = json.loads(path.read_text())
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert m, f"{var['name']}: unsupported query {query}"
        values = scraped.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
        assert values, query
        if m.group(2) == "endpoint":
            assert "/tag" in values, values
