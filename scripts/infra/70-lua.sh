#!/usr/bin/env bash
# Lua 5.4 (Debian's lua5.4): runs the Argo CD health checks in deploy/argocd/ in
# tests/integration/test_argocd_health.py, as Argo CD's own gopher-lua would (idempotent).
set -euo pipefail
command -v lua5.4 >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "infra: lua5.4 is missing; run 'make infra' as root (or apt-get install lua5.4)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null; }
