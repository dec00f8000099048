"""mltag:cpu built from docker/service.Dockerfile and run by `docker compose up mltag` with the
project's compose file: it serves the same tags and scores as the in-process service, with
the compose file's hardening and limits really applied."""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest

from .conftest import (
    CLIPART,
    Reference,
    Service,
    compose_default,
    jpeg_of,
    load_compose,
    noise_png,
    tag,
    wait_ready,
)
from .engine import REPO, Engine

pytestmark = pytest.mark.docker

SCORE_TOLERANCE = 1e-4  # same ONNX Runtime, Pillow and numpy versions: only float noise


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)b?", size.lower())
    assert m, size
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def test_ready_and_alive(service: Service) -> None:
    assert httpx.get(service.url + "/readyz", timeout=5).json() == {"status": "ready"}
    assert httpx.get(service.url + "/livez", timeout=5).status_code == 200


def test_tags_and_scores_match_the_in_process_service(
    service: Service, reference: Reference
) -> None:
    images = [(p.name, p.read_bytes()) for p in CLIPART]
    images += [(p.stem + ".jpg", jpeg_of(p)) for p in CLIPART]
    assert len(images) >= 6
    got = tag(service.url, images, all_scores="true")["results"]
    want = tag(reference.url, images, all_scores="true")["results"]
    assert len(got) == len(want) == len(images)
    for (name, _), g, w in zip(images, got, want, strict=True):
        assert g["error"] is None and w["error"] is None, (name, g, w)
        assert [t["label"] for t in g["tags"]] == [t["label"] for t in w["tags"]], name
        assert g["tags"], f"{name}: no tags at all"
        for gt, wt in zip(g["tags"], w["tags"], strict=True):
            assert gt["score"] == pytest.approx(wt["score"], abs=SCORE_TOLERANCE), name
        assert len(g["scores"]) == len(w["scores"])
        assert g["scores"] == pytest.approx(w["scores"], abs=SCORE_TOLERANCE), name


def test_bundled_model_tags_the_clipart_sensibly(service: Service) -> None:
    """Not only equal to the reference: the labels a person gave these images come back."""
    samples = {
        s["image"]: set(s["labels"])
        for s in json.loads((CLIPART[0].parent / "samples.json").read_text())
    }
    results = tag(service.url, [(p.name, p.read_bytes()) for p in CLIPART])["results"]
    for path, result in zip(CLIPART, results, strict=True):
        labels = {t["label"] for t in result["tags"]}
        assert labels & samples[path.name], (path.name, labels, samples[path.name])


def test_labels_describe_the_baked_model(service: Service, reference: Reference) -> None:
    artifact = compose_default(load_compose()["services"]["mltag"]["build"]["args"]["ARTIFACT"])
    manifest = json.loads((REPO / artifact / "manifest.json").read_text())
    body = httpx.get(service.url + "/labels", timeout=5).json()
    assert (body["model"]["name"], body["model"]["version"]) == (
        manifest["name"],
        manifest["version"],
    )
    assert body["model"]["execution_provider"] == "CPUExecutionProvider"
    assert [label["name"] for label in body["labels"]] == manifest["labels"]
    reference_body = httpx.get(reference.url + "/labels", timeout=5).json()
    # the batching plan is timed in each process at load: its numbers differ, its shape not
    plans = [b["model"].pop("batching") for b in (body, reference_body)]
    assert all(str(p["max_batch_size"]) in p["ms_per_image"] for p in plans), plans
    assert body == reference_body


def test_metrics_count_the_traffic(service: Service) -> None:
    tag(service.url, [(CLIPART[0].name, CLIPART[0].read_bytes())])
    text = httpx.get(service.url + "/metrics", timeout=5).text
    ok = re.search(r'^mltag_images_processed_total\{.*outcome="ok".*\} (\S+)$', text, re.M)
    assert ok and float(ok.group(1)) >= 1, text[:2000]
    assert re.search(r'^mltag_model_info\{.*provider="CPUExecutionProvider".*\} 1\.0$', text, re.M)
    assert re.search(r"^mltag_ready 1\.0$", text, re.M)


def test_upload_over_1mb(service: Service) -> None:
    big = noise_png()
    assert len(big) > 1 << 20
    (result,) = tag(service.url, [("noise.png", big)])["results"]
    assert result["error"] is None, result


def test_logs_are_json_lines(engine: Engine, service: Service) -> None:
    lines = [line for line in engine.logs(service.container).splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "message"} <= set(record), line


def test_runs_as_the_compose_file_says(engine: Engine, service: Service) -> None:
    """Non-root, read-only root with a tmpfs /tmp, the compose file's limits and policy."""
    mltag = load_compose()["services"]["mltag"]
    info = engine.inspect("container", service.container)
    host = info["HostConfig"]
    assert info["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is mltag["read_only"] is True
    assert set(host["Tmpfs"]) == set(mltag["tmpfs"]) == {"/tmp"}
    limits = mltag["deploy"]["resources"]["limits"]
    assert host["NanoCpus"] == int(float(limits["cpus"]) * 1e9)
    assert host["Memory"] == _bytes(limits["memory"])
    reservation = mltag["deploy"]["resources"]["reservations"]["memory"]
    assert host["MemoryReservation"] == _bytes(reservation)
    assert host["RestartPolicy"]["Name"] == mltag["restart"]
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])
    for key, value in mltag["environment"].items():
        assert env[key] == compose_default(str(value)), key
    assert env["ORT_DISABLE_TELEMETRY"] == "1"

    def sh(script: str) -> tuple[int, str]:
        r = engine.run("exec", service.container, "sh", "-c", script, check=False)
        return r.returncode, r.stdout + r.stderr

    assert sh("id -u; id -g") == (0, "10001\n10001\n")
    code, out = sh("touch /opt/mltag/model/x")
    assert code != 0 and "Read-only file system" in out, out
    assert sh("touch /tmp/x && rm /tmp/x")[0] == 0
    code, out = sh("grep ' /tmp ' /proc/mounts")
    assert code == 0 and out.split()[2] == "tmpfs", out


def test_healthcheck_turns_healthy(engine: Engine, service: Service) -> None:
    """The compose file's health check (the image's /livez probe) passes: `healthy` after
    its first interval (15 s)."""
    info = engine.wait_state(
        service.container,
        lambda i: i["State"].get("Health", {}).get("Status") == "healthy",
        timeout_s=60,
        what="healthy",
    )
    log = info["State"]["Health"]["Log"]
    assert log and log[-1]["ExitCode"] == 0, log


def test_serves_large_uploads_without_a_writable_tmp(engine: Engine, cpu_image: str) -> None:
    """Read-only root and no tmpfs at all: uploads are parsed in memory, so even one over 1 MB
    (which Starlette would have spooled to /tmp) is tagged."""
    name = f"mltag-no-tmp-{os.getpid()}"
    engine.run("run", "-d", "--name", name, "--read-only", cpu_image, timeout=120)
    try:
        url = f"http://{engine.container_ip(name)}:8000"
        wait_ready(url, 90, describe=lambda: engine.logs(name))
        no_tmp = engine.run("exec", name, "sh", "-c", "touch /tmp/x", check=False)
        assert no_tmp.returncode != 0  # really no writable /tmp
        (result,) = tag(url, [("noise.png", noise_png())])["results"]
        assert result["error"] is None, result
    finally:
        engine.remove(name)


def test_only_working_console_scripts(engine: Engine, cpu_image: str) -> None:
    """The distribution declares mltag-serve and mltag-train; this image holds only the one
    whose package it carries, and it runs. No torch either."""
    r = engine.run(
        "run", "--rm", "--entrypoint", "sh", cpu_image, "-c",
        "ls /opt/venv/bin | grep '^mltag-'; mltag-serve --help >/dev/null && echo serve-ok",
    )  # fmt: skip
    assert r.stdout.split() == ["mltag-serve", "serve-ok"], r.stdout + r.stderr
    r = engine.run("run", "--rm", "--entrypoint", "python", cpu_image, "-c", "import torch",
                   check=False)  # fmt: skip
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


def test_the_page_and_its_assets_ship_in_the_image(service: Service) -> None:
    """The browser page is package data: it must be in the installed (non-editable) image."""
    page = httpx.get(service.url + "/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("app.js", "app.css"):
        r = httpx.get(f"{service.url}/ui/{asset}", timeout=5)
        assert r.status_code == 200 and len(r.content) > 500, asset
        assert f"/ui/{asset}" in page.text
