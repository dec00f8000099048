"""Prometheus config (promtool) and the Grafana dashboard: every series the dashboard and the
autoscaling rules query is one the running service really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, K8S, find_tool, run_tool

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROMQL_METRIC = re.compile(r"\b(mltag_[a-zA-Z0-9_]+)\b")
# label matchers `name="..."` / `name=~"..."` and grouping `by (a, b)`
PROMQL_MATCHER = re.compile(r"\b([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
PROMQL_BY = re.compile(r"\bby\s*\(([^)]*)\)")


def test_promtool_check_config() -> None:
    promtool = find_tool("promtool", "apt-get install prometheus (.ci/system-deps.sh does)")
    result = run_tool([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_a_dashboard_exists() -> None:
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = _load(path)
    assert dashboard["uid"] and dashboard["title"]
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {d["uid"] for d in provisioned}
    # Panels name the data source through a variable (portable to any Grafana) whose default
    # is the provisioned one.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    if "datasource" in variables:
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["current"]["value"] in uids
        uids.add("${datasource}")
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            assert PROMQL_METRIC.search(target["expr"]), target["expr"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_covers_what_operators_watch(path: Path) -> None:
    text = " ".join(_queries(_load(path)))
    for needed in (
        "mltag_images_processed_total",  # throughput
        "mltag_request_duration_seconds_bucket",  # latency percentiles
        "mltag_batch_size_bucket",  # batch size
        "mltag_queue_depth",  # queue depth
        "mltag_requests_rejected_total",  # rejections
        "mltag_model_info",  # which provider really runs
    ):
        assert needed in text, needed
    assert "histogram_quantile(0.99" in text


def test_grafana_provisioning_is_well_formed() -> None:
    """The provisioning files Grafana reads at start (structure as Grafana's docs define it),
    checked offline: Grafana's image cannot be run without a registry."""
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load(DATASOURCES.read_text())
    assert sources["apiVersion"] == 1
    datasources = sources["datasources"]
    assert [d["uid"] for d in datasources] == list(dict.fromkeys(d["uid"] for d in datasources))
    assert sum(bool(d.get("isDefault")) for d in datasources) == 1
    for d in datasources:
        assert {"name", "type", "uid", "url", "access"} <= set(d), d
        assert d["type"] == "prometheus" and d["access"] == "proxy", d
        assert re.fullmatch(r"\d+(ms|s|m)", d["jsonData"]["timeInterval"]), d
    (provider_file,) = (provisioning / "dashboards").glob("*.yml")
    providers = yaml.safe_load(provider_file.read_text())
    assert providers["apiVersion"] == 1
    for provider in providers["providers"]:
        assert provider["type"] == "file" and provider["name"], provider
        assert provider["options"]["path"].startswith("/"), provider


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_references_resolve(path: Path) -> None:
    """Every data source reference names a provisioned data source (by uid and type), or the
    dashboard's data source variable; every panel has a query with a unique refId."""
    dashboard = _load(path)
    provisioned = {
        d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]
    }
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    refs = {f"${{{name}}}" for name, v in variables.items() if v["type"] == "datasource"}
    for name, var in variables.items():
        if var["type"] == "datasource":
            assert var["query"] in set(provisioned.values()), name  # the plugin type
        elif var["type"] == "query":
            assert var["datasource"]["uid"] in refs | set(provisioned), name
            assert var["datasource"]["type"] == "prometheus", name

    def check(ref: dict[str, Any], where: str) -> None:
        assert ref["uid"] in refs | set(provisioned), where
        if ref["uid"] in provisioned:
            assert ref["type"] == provisioned[ref["uid"]], where
        assert ref["type"] == "prometheus", where

    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert {"gridPos", "title", "targets", "datasource"} <= set(panel), panel.get("title")
        check(panel["datasource"], panel["title"])
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            check(target["datasource"], panel["title"])
            assert target["expr"].strip(), panel["title"]


def _all_queries() -> list[str]:
    """The dashboards' queries and the prometheus-adapter rules' series queries."""
    queries = [q for path in DASHBOARDS for q in _queries(_load(path))]
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())["rules"]
    return queries + [rule["seriesQuery"] for rule in rules]


def _labels_used(query: str) -> set[str]:
    labels = set(PROMQL_MATCHER.findall(query))
    for group in PROMQL_BY.findall(query):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    # `le` is the buckets' label; namespace/pod come from the Kubernetes scrape job.
    return labels - {"le", "namespace", "pod"}


@pytest.mark.integration
def test_every_queried_metric_is_exported(live_metrics: dict[str, set[str]]) -> None:
    required = {m for q in _all_queries() for m in PROMQL_METRIC.findall(q)}
    assert len(required) >= 10
    missing = sorted(required - set(live_metrics))
    assert not missing, f"queried but not in a live /metrics scrape: {missing}"


@pytest.mark.integration
def test_queried_labels_exist_on_their_metrics(live_metrics: dict[str, set[str]]) -> None:
    checked = 0
    for query in _all_queries():
        metrics = PROMQL_METRIC.findall(query)
        known = set().union(*(live_metrics.get(m, set()) for m in metrics))
        stray = _labels_used(query) - known
        assert not stray, f"{query}: labels {sorted(stray)} not on {sorted(set(metrics))}"
        checked += bool(_labels_used(query))
    assert checked >= 3  # endpoint, status_class, outcome, reason are all used somewhere
