#!/usr/bin/env bash
# A local wheelhouse for the offline distribution tests (tests/integration/test_dist_*.py):
# the wheels of safehold's base and runner dependencies, setuptools to build safehold's own
# wheel, and pip. Downloaded here, at set-up time, so that the tests install with --no-index
# and never reach the network. Cached in .cache/wheelhouse, keyed by pyproject.toml.
#
# Usage: scripts/wheelhouse.sh [PYTHON]   Prints the wheelhouse directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-$root/.venv/bin/python}"
house="$root/.cache/wheelhouse"
# contents only (`cat`): the script is run as scripts/wheelhouse.sh by make and by its absolute
# path from the tests, and both must find the same wheelhouse
key="$( (cat "$root/pyproject.toml" "$0"; "$py" -c 'import sys; print(sys.version)') \
        | sha256sum | cut -c1-16)"
if [[ "$(cat "$house/.key" 2>/dev/null)" == "$key" ]]; then
  echo "$house"
  exit 0
fi
mkdir -p "$house"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
"$py" - "$root/pyproject.toml" > "$reqs" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
build = tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["runner"] + build
                + ["pip", "wheel"]))
PY
echo "wheelhouse: downloading into $house ..." >&2
"$py" -m pip download -q --only-binary :all: --dest "$house" -r "$reqs" >&2
echo "$key" > "$house/.key"
echo "$house"
