# syntax=docker/dockerfile:1
# mltag CPU service image: `mltag-serve` over ONNX Runtime (CPU), one model baked in.
#
# Build from the repository root (BuildKit, the default since Docker 23):
#   docker build -f docker/service.Dockerfile -t mltag:cpu .
#     bakes models/default (the build fails, saying so, while there is none), or
#   docker build -f docker/service.Dockerfile --build-arg ARTIFACT=build/demo-artifact -t mltag:cpu .
#     after `make demo-artifact`, or
#   docker build -f docker/service.Dockerfile --build-arg DEMO_FALLBACK=1 -t mltag:cpu .
#     builds the colour demo artifact inside the build when ARTIFACT is absent.
# Run: docker run --rm -p 8000:8000 mltag:cpu   (settings: -e MLTAG_...=...; flags: append them)
#
# Expected size: about 350 MB uncompressed (~120 MB compressed). Estimated, not built (no
# Docker engine on our machines): python:3.11-slim-bookworm ~130 MB + the venv measured by
# installing `.[service]` with docker/constraints.txt into a fresh venv: 245 MB, of which
# onnxruntime 78, numpy 73, pillow 23, uvloop 14, pip + setuptools 24 (removed here) + the
# model (the demo artifact: a few kB). No torch, ever: the build fails if anything pulls it in.
#
# Kept in step with tests/deploy/: the tests start the service with this ENTRYPOINT and ENV,
# run docker/healthcheck.py against it, and hadolint this file.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv holding the package and its `service` extra, nothing else --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY mltag_artifact ./mltag_artifact
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[service]" \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- artifact: the model directory to bake in ---------------------------------------------
# ARTIFACT is a path in the build context holding model.onnx + manifest.json + MODEL_CARD.md.
# DEMO_FALLBACK=1 builds the hand-weighted colour demo artifact when ARTIFACT is absent
# (docker-compose.yml sets it, as `make run` falls back to it, when models/default is missing).
FROM build AS artifact
ARG ARTIFACT=models/default
ARG DEMO_FALLBACK=0
COPY model_training ./model_training
RUN --mount=type=bind,target=/ctx \
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
FROM build AS venv
RUN /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

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
