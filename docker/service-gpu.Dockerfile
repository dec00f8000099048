# mltag GPU service image: `mltag-serve` over ONNX Runtime's CUDA execution provider.
#
# Build from the repository root:
#   docker build -f docker/service-gpu.Dockerfile -t mltag:gpu .
#   (same ARTIFACT / DEMO_FALLBACK build args as docker/service.Dockerfile)
# Run (NVIDIA Container Toolkit on the host, driver >= 580 for CUDA 13):
#   docker run --rm --gpus 1 -p 8000:8000 mltag:gpu
# MLTAG_REQUIRE_GPU=true: the service refuses to start rather than silently serve on CPU.
#
# Size: about 4 GB uncompressed. Measured (make test-docker, on a stand-in base: the CUDA base
# cannot be pulled here): the image adds 520 MB to its base, the venv 492 MB (onnxruntime-gpu)
# + the model 28 MB; the CUDA 13 + cuDNN 9 runtime base is ~3.3 GB (published layers).
# onnxruntime-gpu from PyPI is built for CUDA 13 + cuDNN 9, hence this base; keep the two in
# step when bumping docker/constraints.txt.

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- base: the CUDA runtime + the distribution's Python 3.12 ------------------------------
FROM ${CUDA_IMAGE} AS base
# Ubuntu's package versions move with security updates; pinning them breaks rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# ---- build: a virtualenv holding the package and its `gpu` extra --------------------------
FROM base AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Optional package index and CA bundle: as in docker/service.Dockerfile.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY mltag_artifact ./mltag_artifact
COPY service ./service
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[gpu]" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- artifact: as in docker/service.Dockerfile --------------------------------------------
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

# ---- venv: the build's virtualenv without the installer, `mltag-train` and `mltag-batch` (see
# docker/service.Dockerfile) --------------------------------------------------------------
FROM build AS venv
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && rm /opt/venv/bin/mltag-train /opt/venv/bin/mltag-batch

# ---- runtime ------------------------------------------------------------------------------
FROM base AS runtime
LABEL org.opencontainers.image.title="mltag-service-gpu" \
      org.opencontainers.image.description="Multilabel image tagging service (ONNX Runtime, CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
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
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    MLTAG_ARTIFACT_DIR=/opt/mltag/model \
    MLTAG_HOST=0.0.0.0 \
    MLTAG_PORT=8000 \
    MLTAG_PROVIDER=cuda \
    MLTAG_REQUIRE_GPU=true \
    MLTAG_LOG_FORMAT=json
WORKDIR /opt/mltag
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/mltag/healthcheck.py"]
ENTRYPOINT ["mltag-serve"]
