#!/usr/bin/env bash
# Installs Linux perf (Debian package linux-perf) for `npm run bench:perf`. Idempotent: nothing
# happens when `perf` runs already. Needs root for apt-get.
set -euo pipefail
if perf --version >/dev/null 2>&1; then exit 0; fi
echo "bench:perf: installing linux-perf" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq linux-perf >/dev/null
perf --version >/dev/null
