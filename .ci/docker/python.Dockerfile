# Stand-in for python:3.11-slim where no registry is reachable: Debian bookworm's Python 3.11
# on the imported debootstrap image. Built by .ci/docker.sh; never published.
ARG DEBIAN_IMAGE=mltag-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
