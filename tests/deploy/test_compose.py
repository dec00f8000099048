"""docker-compose.yml (+ the GPU override): compose-spec schema, and agreement with the
images, the Prometheus config and the Grafana provisioning."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    DEPLOY,
    GPU_DOCKERFILE,
    REPO,
    SERVICE_DOCKERFILE,
    find_tool,
    require_service,
    run_tool,
)
from .dockerfile import parse_dockerfile, parse_healthcheck
from .settings_env import check_settings_env

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge for what these files use: mappings merge, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(number) * units[unit]
    return total


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_spec_schema(path: Path) -> None:
    tool = find_tool("check-jsonschema", "pip install check-jsonschema (in the dev extra)")
    result = run_tool([tool, "--builtin-schema", "vendor.compose-spec", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def _default(value: str) -> str:
    """`${VAR:-default}` -> default (what Compose uses with VAR unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_brings_up_service_prometheus_and_grafana() -> None:
    services = _load(COMPOSE)["services"]
    assert {"mltag", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = _default(service["image"])
        if name != "mltag":
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: pin {image}"
            # Replaceable (a mirror, or the stand-in the container tests build without a
            # registry) but pinned by default.
            assert service["image"].startswith(f"${{{name.upper()}_IMAGE:-"), service["image"]
        assert "limits" in service["deploy"]["resources"], name


def test_gpu_override_does_not_restart_a_refusal_forever() -> None:
    """Without a usable GPU the service exits 2; `unless-stopped` or `always` would restart it
    in a loop (tests/containers/test_gpu_image.py watches it stop)."""
    merged = _merge(_load(COMPOSE), _load(COMPOSE_GPU))
    policy = merged["services"]["mltag"]["restart"]
    assert policy == "no" or re.fullmatch(r"on-failure:[1-9]\d*", policy), policy


def test_service_builds_the_cpu_image_with_a_fallback_model() -> None:
    mltag = _load(COMPOSE)["services"]["mltag"]
    build = mltag["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == SERVICE_DOCKERFILE
    # `docker compose up` must work before models/default exists: no manual step.
    assert build["args"]["DEMO_FALLBACK"] == "1"
    assert build["args"]["ARTIFACT"].endswith("models/default}")


def test_service_port_healthcheck_and_grace_match_the_image() -> None:
    mltag = _load(COMPOSE)["services"]["mltag"]
    image = parse_dockerfile(SERVICE_DOCKERFILE).final
    port = image.env()["MLTAG_PORT"]
    assert any(str(p).endswith(f":{port}") for p in mltag["ports"])
    healthcheck = image.last("HEALTHCHECK")
    assert healthcheck is not None
    _, argv = parse_healthcheck(healthcheck.args)
    assert mltag["healthcheck"]["test"] == ["CMD", *argv]
    drain = float(mltag["environment"]["MLTAG_DRAIN_TIMEOUT_S"])
    assert _seconds(mltag["stop_grace_period"]) > drain + 1
    assert mltag["read_only"] is True
    assert "/tmp" in mltag["tmpfs"]
    assert any(v.split(":")[1] == "/models" for v in mltag["volumes"])


def test_gpu_override_reserves_a_gpu_and_builds_the_cuda_image() -> None:
    merged = _merge(_load(COMPOSE), _load(COMPOSE_GPU))
    mltag = merged["services"]["mltag"]
    assert (REPO / mltag["build"]["context"] / mltag["build"]["dockerfile"]).resolve() == (
        GPU_DOCKERFILE
    )
    devices = mltag["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert mltag["environment"]["MLTAG_PROVIDER"] == "cuda"
    assert mltag["environment"]["MLTAG_REQUIRE_GPU"] == "true"
    assert mltag["build"]["args"]["DEMO_FALLBACK"] == "1"  # merged from the base file


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_compose_environment_holds_valid_settings(
    gpu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service()
    compose = _load(COMPOSE)
    if gpu:
        compose = _merge(compose, _load(COMPOSE_GPU))
    env = {
        k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))  # ${VAR:-default} -> default
        for k, v in compose["services"]["mltag"]["environment"].items()
    }
    dockerfile = GPU_DOCKERFILE if gpu else SERVICE_DOCKERFILE
    image_env = parse_dockerfile(dockerfile).final.env()
    merged = {**{k: v for k, v in image_env.items() if k.startswith("MLTAG_")}, **env}
    check_settings_env(merged, "docker-compose", monkeypatch)


def test_mounted_config_files_exist() -> None:
    for name, service in _load(COMPOSE)["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not source.startswith("./models"):
                assert (REPO / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_the_compose_service() -> None:
    compose = _load(COMPOSE)
    prometheus = _load(DEPLOY / "prometheus" / "prometheus.yml")
    port = parse_dockerfile(SERVICE_DOCKERFILE).final.env()["MLTAG_PORT"]
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    assert f"mltag:{port}" in targets
    assert "mltag" in compose["services"]


def test_grafana_provisioning_paths_match_the_mounts() -> None:
    grafana = _load(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    provider = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "mltag.yml")
    assert provider["providers"][0]["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()
    datasource = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_thread_pools_fit_the_cpu_limit(gpu: bool) -> None:
    compose = _load(COMPOSE)
    if gpu:
        compose = _merge(compose, _load(COMPOSE_GPU))
    mltag = compose["services"]["mltag"]
    limit = float(mltag["deploy"]["resources"]["limits"]["cpus"])
    for key in ("MLTAG_INTRA_OP_THREADS", "MLTAG_DECODE_THREADS"):
        assert 1 <= int(mltag["environment"][key]) <= limit, key
