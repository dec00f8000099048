"""Kubernetes manifests: every kustomization renders, passes `kubernetes-validate --strict`,
and says what the deployment conventions ask for."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    K8S,
    SERVICE_DOCKERFILE,
    find_tool,
    require_service,
    run_tool,
)
from .dockerfile import parse_dockerfile
from .settings_env import check_settings_env

KUSTOMIZATIONS = sorted(
    p.parent
    for p in K8S.rglob("kustomization.yaml")
    if yaml.safe_load(p.read_text()).get("kind") == "Kustomization"
)
OVERLAYS = [K8S / "overlays" / "cpu", K8S / "overlays" / "gpu"]
APPLIED = [d for d in KUSTOMIZATIONS if d != K8S / "base"]  # the base needs an overlay
WORKLOADS = [*OVERLAYS, *(d for d in APPLIED if d.parent.name == "examples")]
# Oldest and newest Kubernetes the manifests are checked against.
K8S_VERSIONS = ["1.29.0", "1.37.0"]


def _id(path: Path) -> str:
    return str(path.relative_to(K8S))


_rendered: dict[Path, str] = {}


def render(directory: Path) -> str:
    """`kustomize build DIR` (standalone kustomize or the one built into kubectl)."""
    if directory not in _rendered:
        if shutil.which("kustomize"):
            argv = [shutil.which("kustomize") or "kustomize", "build", str(directory)]
        else:
            kubectl = find_tool("kubectl", "install kubectl or kustomize to render k8s/")
            argv = [kubectl, "kustomize", str(directory)]
        result = run_tool(argv)
        assert result.returncode == 0, result.stderr
        _rendered[directory] = result.stdout
    return _rendered[directory]


def objects(directory: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(directory)) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "mltag")


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    ref = container(docs)["envFrom"][0]["configMapRef"]["name"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref)
    data: dict[str, str] = cm["data"]
    return data


def test_expected_layout() -> None:
    assert {K8S / "base", *OVERLAYS} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", APPLIED, ids=_id)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_validate_strict(directory: Path, version: str, tmp_path: Path) -> None:
    tool = find_tool("kubernetes-validate", "pip install kubernetes-validate (dev extra)")
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render(directory))
    result = run_tool([tool, "--strict", "--kubernetes-version", version, str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator is not a no-op: a misspelt probe field fails."""
    tool = find_tool("kubernetes-validate", "pip install kubernetes-validate (dev extra)")
    docs = objects(OVERLAYS[0])
    container(docs)["readinessProbe"]["periodSecond"] = 5
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = run_tool([tool, "--strict", str(manifest)])
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_workload_objects(directory: Path) -> None:
    kinds = sorted(d["kind"] for d in objects(directory) if d["kind"] not in EXTRA_KINDS)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ]
    )


# Objects a component may add beside the workload (the model repository's volume claim).
EXTRA_KINDS = {"PersistentVolumeClaim"}


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_probes_on_the_service_endpoints(directory: Path) -> None:
    c = container(objects(directory))
    port = c["ports"][0]
    assert port["name"] == "http"
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # load + warm-up
    assert str(port["containerPort"]) == settings(objects(directory))["MLTAG_PORT"]


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_security_context(directory: Path) -> None:
    docs = objects(directory)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    uid = parse_dockerfile(SERVICE_DOCKERFILE).final.user()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == uid
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    # A Service named `mltag` would otherwise inject MLTAG_PORT=tcp://... into our settings.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_shutdown_outlasts_the_request_deadline(directory: Path) -> None:
    docs = objects(directory)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    prestop = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    sleep_s = float(prestop[1])
    env = settings(docs)
    grace = pod["terminationGracePeriodSeconds"]
    # preStop, then SIGTERM: drain accepted work for up to MLTAG_DRAIN_TIMEOUT_S (+1 s).
    assert grace > sleep_s + float(env["MLTAG_DRAIN_TIMEOUT_S"]) + 1
    assert grace > float(env["MLTAG_REQUEST_TIMEOUT_S"])


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_resources(directory: Path) -> None:
    resources = container(objects(directory))["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section
    gpu = "gpu" in _id(directory)
    assert ("nvidia.com/gpu" in resources["limits"]) is gpu
    assert "nvidia.com/gpu" not in resources["requests"]  # extended resources: limits only


def test_gpu_overlay_runs_on_the_gpu() -> None:
    docs = objects(K8S / "overlays" / "gpu")
    env = settings(docs)
    assert env["MLTAG_PROVIDER"] == "cuda"
    assert env["MLTAG_REQUIRE_GPU"] == "true"
    assert container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(docs)["image"].endswith(":gpu")
    tolerations = one(docs, "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_selectors_and_references_line_up(directory: Path) -> None:
    docs = objects(directory)
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        obj = one(docs, kind)
        sel = obj["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert sel, f"{kind} selects nothing"
        assert sel.items() <= pod_labels.items(), kind
    assert selector.items() <= pod_labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The HPA owns the replica count; a Deployment value would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["minReplicas"] >= 1
    pdb = one(docs, "PodDisruptionBudget")
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    assert any(
        m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]
    )
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {one(docs, "Namespace")["metadata"]["name"]}


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_configmap_holds_valid_settings(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_service()
    check_settings_env(settings(objects(directory)), _id(directory), monkeypatch)


def test_queue_depth_hpa_uses_a_metric_the_adapter_serves() -> None:
    docs = objects(K8S / "examples" / "cpu-queue-depth-hpa")
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())["rules"]
    served = {rule["name"]["as"] for rule in rules}
    assert pods, metrics
    assert set(pods) <= served
    adapter = objects(K8S / "prometheus-adapter")
    embedded = yaml.safe_load(one(adapter, "ConfigMap")["data"]["config.yaml"])
    assert embedded == {"rules": rules}


def test_adapter_rules_match_the_scrape_labels() -> None:
    """The adapter maps `namespace`/`pod` series labels to objects; the example scrape job
    must set exactly those labels."""
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())["rules"]
    wanted = {label for rule in rules for label in rule["resources"]["overrides"]}
    scrape = yaml.safe_load((K8S / "prometheus-adapter" / "prometheus-scrape.yml").read_text())
    relabels = scrape["scrape_configs"][0]["relabel_configs"]
    assert wanted <= {r.get("target_label") for r in relabels}
    for r in relabels:
        if "regex" in r:
            re.compile(r["regex"])
    for rule in rules:
        assert re.match(r"^\w+\{", rule["seriesQuery"])


def test_artifact_image_component_mounts_the_artifact_read_only() -> None:
    docs = objects(K8S / "examples" / "cpu-artifact-image")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"].startswith("mltag-artifact:")
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True
    artifact_dir = settings(docs)["MLTAG_ARTIFACT_DIR"]
    copy_target = init["command"][-1].rstrip("/")
    assert artifact_dir == f"{copy_target}/artifact"
    assert artifact_dir.startswith(mount["mountPath"])


def test_settings_check_catches_a_misspelt_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    require_service()
    with pytest.raises(AssertionError, match="MLTAG_MAX_BATCH"):
        check_settings_env({"MLTAG_MAX_BATCH": "32"}, "typo", monkeypatch)
    with pytest.raises(ValueError, match="max_batch_size"):
        check_settings_env({"MLTAG_MAX_BATCH_SIZE": "0"}, "range", monkeypatch)


def _cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("directory", WORKLOADS, ids=_id)
def test_thread_pools_fit_the_cpu_limit(directory: Path) -> None:
    """With 0 (auto) the service sizes its pools from the node's cores, not the CPU limit."""
    docs = objects(directory)
    env = settings(docs)
    limit = _cpus(container(docs)["resources"]["limits"]["cpu"])
    for key in ("MLTAG_INTRA_OP_THREADS", "MLTAG_DECODE_THREADS"):
        assert 1 <= int(env[key]) <= limit, key


def test_model_repository_component_polls_a_read_only_volume() -> None:
    docs = objects(K8S / "examples" / "cpu-model-repository")
    env = settings(docs)
    assert env["MLTAG_MODEL_REPOSITORY"] == "/models/repository"
    assert float(env["MLTAG_REPOSITORY_POLL_S"]) > 0
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "model-repository")
    assert mount["readOnly"] is True and mount["mountPath"] == env["MLTAG_MODEL_REPOSITORY"]
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "model-repository")  # fmt: skip
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
