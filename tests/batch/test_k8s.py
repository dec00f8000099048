"""k8s/batch/: the KubeRay RayJob that runs `mltag-batch` on a cluster, validated offline.
KubeRay's CRD is not in kubernetes-validate, so: its own fields against a schema written from
KubeRay's API reference (rayjob.schema.json), its pod templates with `kubernetes-validate
--strict` as core PodTemplates, its entrypoint with the real CLI's parser, and the image
recipe with hadolint."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mltag_batch.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
BATCH = REPO / "k8s" / "batch"
RAYJOB = BATCH / "rayjob.yaml"
DOCKERFILE = BATCH / "batch.Dockerfile"
SCHEMA = json.loads((Path(__file__).parent / "rayjob.schema.json").read_text())
K8S_VERSIONS = ["1.29.0", "1.37.0"]  # as tests/deploy checks the service's manifests


def tool(name: str) -> str:
    """A validator from the dev extra (next to this interpreter) or PATH; a skip on a
    workstation without it, a failure in CI."""
    found = Path(sys.executable).parent / name
    path = str(found) if found.exists() else shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} not found")
    pytest.skip(f"{name} not found (dev extra)")


def rayjob() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    assert len(docs) == 1
    job: dict[str, Any] = docs[0]
    return job


def pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def test_the_rayjob_uses_only_kuberay_fields() -> None:
    jsonschema.validate(rayjob(), SCHEMA)


def test_the_schema_catches_a_misspelt_field() -> None:
    job = rayjob()
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(job, SCHEMA)
    job = rayjob()
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        jsonschema.validate(job, SCHEMA)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_templates_are_valid_kubernetes(version: str, tmp_path: Path) -> None:
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate",
         "metadata": {"name": f"group-{i}", "namespace": "mltag"}, "template": group["template"]}
        for i, group in enumerate(pods(rayjob()))
    ]  # fmt: skip
    manifest = tmp_path / "templates.yaml"
    manifest.write_text(yaml.safe_dump_all(templates))
    argv = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(manifest)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

    broken = copy.deepcopy(templates)
    broken[1]["template"]["spec"]["containers"][0]["resource"] = {}  # a typo must fail
    manifest.write_text(yaml.safe_dump_all(broken))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "resource" in r.stdout + r.stderr


def test_the_entrypoint_is_a_real_mltag_batch_command() -> None:
    job = rayjob()
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "mltag-batch"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.address == "auto"  # the cluster the RayJob made
    assert str(args.artifact) == "/opt/mltag/model"  # where the image bakes it
    assert "COPY --chown=ray:users ${ARTIFACT} /opt/mltag/model" in DOCKERFILE.read_text()
    # Input and output must be reachable from every pod: object storage here.
    assert re.match(r"^(s3|gs|abfs)://", args.input) and re.match(r"^(s3|gs|abfs)://", args.output)
    # Actors fit the workers (the head runs the driver only).
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    worker_cpus = sum(
        g["replicas"] * float(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        for g in cluster["workerGroupSpecs"]
    )
    assert args.concurrency * args.cpus_per_actor <= worker_cpus


def test_one_image_and_one_ray_version_everywhere() -> None:
    job = rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    images = {g["template"]["spec"]["containers"][0]["image"] for g in pods(job)}
    assert images == {"mltag-batch:latest"}
    base = re.search(r"ARG RAY_IMAGE=rayproject/ray:([0-9.]+)-py311", DOCKERFILE.read_text())
    assert base is not None
    pinned = re.search(r"^ray==(.+)$", (BATCH / "constraints.txt").read_text(), re.M)
    assert pinned is not None
    assert cluster["rayVersion"] == base.group(1) == pinned.group(1)
    secrets = {
        g["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"] for g in pods(job)
    }
    assert secrets == {"mltag-batch-storage"}  # every pod reads the same storage


def test_the_image_recipe() -> None:
    r = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE.relative_to(REPO))],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # Every COPY source is in the build context its own ignore file allows.
    allowed = [
        line[1:].rstrip("/")
        for line in (BATCH / "batch.Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for group in sources:
        for src in group.split():
            src = src.rstrip("/")
            if src.startswith("${"):
                src = "models"  # ARTIFACT: under models/ by default
            assert any(src == a or src.startswith(a + "/") for a in allowed), src
