# mltag CPU service image: `mltag-serve` over ONNX Runtime (CPU), one model baked in.
#
# Build from the repository root with BuildKit (the default since Docker 23, through buildx;
# DOCKER_BUILDKIT=1 with a 20.10 client):
#   docker build -f docker/service.Dockerfile -t mltag:cpu .
#     bakes models/default (the build fails, saying so, while there is none), or
#   docker build -f docker/service.Dockerfile --build-arg ARTIFACT=build/demo-artifact -t mltag:cpu .
#     after `make demo-artifact`, or
#   docker build -f docker/service.Dockerfile --build-arg DEMO_FALLBACK=1 -t mltag:cpu .
#     builds the colour demo artifact inside the build when ARTIFACT is absent.
# Run: docker run --rm -p 8000:8000 mltag:cpu   (settings: -e MLTAG_...=...; flags: append them)
#
# Size, measured (make test-docker; docs/deployment.md, "Images"): the image adds 236 MB to
# its base, the venv 218 MB (onnxruntime, numpy, pillow, uvloop, ...; pip and setuptools
# removed) + the bundled model 28 MB: ~380 MB uncompressed on python:3.11-slim (~130 MB).
# No torch, ever: the build fails if anything pulls it in.
# Air-gapped or behind a proxy: the base image, package index and CA bundle are build inputs
# (below; docs/deployment.md, "Building without a registry or behind a proxy").
#
# Kept in step with tests/deploy/ (hadolint, the ENTRYPOINT and ENV run as a process) and
# tests/containers/ (this file built and run on a Docker engine, as docker-compose.yml runs it).
# Kept in step with tests/deploy/: the tests start the service with this ENTRYPOINT and ENV,
# run docker/healthcheck.py against it, and hadolint this file.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv holding the package and its `service` extra, nothing else --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Optional, for networks that need them (docs/deployment.md, "Building behind a proxy"): a
# package index (--build-arg PIP_INDEX_URL=..., PIP_EXTRA_INDEX_URL=...) and a CA bundle for a
# TLS-intercepting proxy (--secret id=ca_bundle,src=bundle.pem: used as PIP_CERT, never stored
# in a layer). Without them pip uses PyPI and its own CA list.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY mltag_artifact ./mltag_artifact
COPY service ./service
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[service]" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- artifact: the model directory to bake in ---------------------------------------------
# ARTIFACT is a path in the build context holding model.onnx + manifest.json + MODEL_CARD.md.
# DEMO_FALLBACK=1 builds the hand-weighted colour demo artifact when ARTIFACT is absent
# (docker-compose.yml sets it, as `make run` falls back to it, when models/default is missing).
FROM build AS artifact
ARG ARTIFACT=models/default
ARG DEMO_FALLBACK=0
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY model_training ./model_training
RUN --mount=type=bind,target=/ctx --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if [ -f "/ctx/${ARTIFACT}/manifest.json" ]; then \
        cp -R "/ctx/${ARTIFACT}" /artifact; \
    elif [ "${DEMO_FALLBACK}" = "1" ]; then \
        echo "WARNING: no artifact at ${ARTIFACT}; baking the colour demo model" >&2 \
        && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt onnx \
        && PYTHONPATH=/src /opt/venv/bin/python -m model_training demo-artifact --output /artifact; \
    else \
        echo "ERROR: no artifact at ${ARTIFACT} (no manifest.json). Pass --build-arg" \
             "ARTIFACT=<dir in the build context> or --build-arg DEMO_FALLBACK=1." >&2; \
        exit 1; \
    fi

# ---- venv: the build's virtualenv without the installer (pip, setuptools: ~25 MB) ---------
# and without `mltag-train` and `mltag-batch`: the one distribution installs every console
# script, but their packages are not in this image (tests/containers/ checks every script
# left runs).
FROM build AS venv
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && rm /opt/venv/bin/mltag-train /opt/venv/bin/mltag-batch

# ---- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mltag-service" \
      org.opencontainers.image.description="Multilabel image tagging service (ONNX Runtime, CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 mltag \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mltag
COPY --from=venv /opt/venv /opt/venv
COPY --from=artifact /artifact /opt/mltag/model
COPY docker/healthcheck.py /opt/mltag/healthcheck.py
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MLTAG_ARTIFACT_DIR=/opt/mltag/model \
    MLTAG_HOST=0.0.0.0 \
    MLTAG_PORT=8000 \
    MLTAG_PROVIDER=cpu \
    MLTAG_LOG_FORMAT=json
WORKDIR /opt/mltag
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/mltag/healthcheck.py"]
ENTRYPOINT ["mltag-serve"]
