#!/usr/bin/env bash
# System packages the test suite needs beyond Python ones, installed from Debian by name.
# Called by .ci/run; safe to run again (does nothing when all is present). Needs root (or sudo).
#   prometheus  -> promtool, for `promtool check config` on deploy/prometheus/prometheus.yml
#   strace      -> tests/service/test_no_outbound.py traces every connect() of the service
#   chromium    -> tests/browser: the page at / in a real browser (Playwright drives Debian's
#                  /usr/bin/chromium; `playwright install` is never run)
# kubectl (its built-in kustomize renders k8s/) comes with the machine image; Debian does not
# package it, so it is only checked for here.
set -euo pipefail

packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v strace >/dev/null 2>&1 || packages+=(strace)
[ -x /usr/bin/chromium ] || packages+=(chromium)

if [ "${#packages[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  echo "system-deps: installed ${packages[*]}"
fi

if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
  echo "system-deps: WARNING: neither kubectl nor kustomize on PATH; the k8s rendering tests" \
       "will fail under CI" >&2
fi
