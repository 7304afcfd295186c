#!/usr/bin/env bash
# Build the standalone one-file `safehold` executable with PyInstaller (docs/install.md).
#
# Usage: scripts/build-exe.sh [PYTHON]     (default .venv/bin/python; PyInstaller must be in it)
# Prints the executable's path on stdout. The result is cached under .cache/exe/: a build is
# skipped when the sources, pyproject.toml and this script are unchanged (their digest is the
# cache key).
#
# What it holds: the CLI with the SQLite engine, local storage (file://), every codec
# (gzip, bzip2, lz4, zstd), AES-256-GCM, config, audit, schedules and stats. It leaves out
# the PostgreSQL/MySQL/MongoDB drivers and the S3/GCS/Azure SDKs (they would triple its size
# and its build time); for those, install the package: pipx install 'safehold[runner]'.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-$root/.venv/bin/python}"
cache="$root/.cache/exe"
mkdir -p "$cache"

key="$( (cd "$root" && find operator/safehold -name '*.py' -print0 | sort -z \
           | xargs -0 sha256sum; sha256sum pyproject.toml scripts/build-exe.sh \
           scripts/exe_entry.py; "$py" -c 'import sys; print(sys.version)') \
        | sha256sum | cut -c1-16)"
exe="$cache/safehold"
if [[ -x "$exe" && "$(cat "$cache/key" 2>/dev/null)" == "$key" ]]; then
  echo "build-exe: up to date ($key)" >&2
  echo "$exe"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Heavy optional libraries the SQLite/local build never uses; the registry names a missing
# engine or backend clearly (`pipx install 'safehold[runner]'`).
excludes=(boto3 botocore s3transfer google azure psycopg2 pymysql pymongo bson kubernetes kopf
          safehold.controller moto pytest _pytest mypy tkinter IPython numpy pandas)
args=()
for m in "${excludes[@]}"; do args+=(--exclude-module "$m"); done
echo "build-exe: building ($key) ..." >&2
"$py" -m PyInstaller --onefile --name safehold --noconfirm --log-level WARN --clean \
  --distpath "$work/dist" --workpath "$work/build" --specpath "$work" \
  --paths "$root/operator" \
  --collect-submodules safehold.engines.sqlite \
  --collect-submodules safehold.codecs \
  --collect-submodules safehold.cli \
  --hidden-import safehold.storage.local \
  "${args[@]}" "$root/scripts/exe_entry.py" >&2
mv -f "$work/dist/safehold" "$exe"
echo "$key" > "$cache/key"
echo "build-exe: $exe, $(du -h "$exe" | cut -f1)" >&2
echo "$exe"
