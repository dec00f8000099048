# syntax=docker/dockerfile:1
# mltag-batch on Ray: the image every pod of k8s/batch/rayjob.yaml runs (the head runs the
# driver, the workers the tagging actors). Ray's own image, so that the driver, the workers
# and KubeRay agree on one Ray version (rayVersion in rayjob.yaml; tests/batch checks both),
# plus mltag with its `batch` extra (never torch) and the model baked at /opt/mltag/model.
#
# Build from the repository root (BuildKit reads batch.Dockerfile.dockerignore beside this
# file instead of the root .dockerignore):
#   docker build -f k8s/batch/batch.Dockerfile -t mltag-batch:latest .
#   docker build -f k8s/batch/batch.Dockerfile --build-arg ARTIFACT=models/mine -t ... .

ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

ARG ARTIFACT=models/default
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAY_USAGE_STATS_ENABLED=0

WORKDIR /home/ray/mltag-src
COPY --chown=ray:users k8s/batch/constraints.txt /tmp/constraints.txt
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users mltag_artifact ./mltag_artifact
COPY --chown=ray:users mltag_batch ./mltag_batch
# Ray is already in the image (the same version is pinned): pip adds what the extra needs, at
# the versions the tests ran with. Fail the build if anything pulled in torch.
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[batch]" \
    && ! pip show torch >/dev/null 2>&1 \
    && mltag-batch --help >/dev/null

COPY --chown=ray:users ${ARTIFACT} /opt/mltag/model
RUN python -m mltag_artifact check /opt/mltag/model

WORKDIR /home/ray
# The base image's user (uid 1000, what KubeRay's pods run as).
USER 1000
