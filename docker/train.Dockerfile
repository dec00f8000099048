# mltag training image: torch + timm, entrypoint `mltag-train`.
#
# Build from the repository root:
#   docker build -f docker/train.Dockerfile -t mltag:train .
# Run with the working directory (configs, data, runs/) mounted at /workspace:
#   docker run --rm --gpus all --shm-size=8g -v "$PWD:/workspace" mltag:train COMMAND ...
# (--gpus needs the NVIDIA Container Toolkit; without it training runs on CPU. DataLoader
# workers share tensors through /dev/shm, hence --shm-size.)
#
# Size, measured (make test-docker-all; docs/deployment.md, "Images"): the venv adds 6.06 GB
# to the base (~6.2 GB uncompressed on python:3.11-slim): torch's Linux x86_64 wheels bring
# their CUDA 13 user-space libraries as pip packages (nvidia-*, triton), so no CUDA base image
# is needed. Built in ~6 min on 2 cores (most of it downloading and unpacking the wheels).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv holding the package and its `train` extra ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Optional package index and CA bundle: as in docker/service.Dockerfile.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY mltag_artifact ./mltag_artifact
COPY model_training ./model_training
# The one distribution also installs `mltag-serve` and `mltag-batch`, whose packages are not in
# this image: removed
# (tests/containers/ checks every script left runs).
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[train]" \
    && rm /opt/venv/bin/mltag-serve /opt/venv/bin/mltag-batch

# ---- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mltag-train" \
      org.opencontainers.image.description="Train and export mltag multilabel taggers (torch + timm)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mltag \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/mltag \
       --shell /usr/sbin/nologin mltag \
    && mkdir -p /workspace \
    && chown 10001:10001 /workspace
COPY --from=build /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    HOME=/home/mltag
WORKDIR /workspace
USER 10001:10001
ENTRYPOINT ["mltag-train"]
CMD ["--help"]
