#!/usr/bin/env bash
# Build actionlint (the GitHub Actions workflow linter run by `make lint`) from the Go module
# proxy, pinned. The binary lands in the repository's git-ignored .cache/bin/ and in the
# machine-wide cache ($SAFEHOLD_MACHINE_CACHE, default ~/.cache/safehold/actionlint/<version>/),
# so a fresh clone on a machine that built it once only copies it.
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
module="github.com/rhysd/actionlint"
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/.cache/bin"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}/actionlint/$ACTIONLINT_VERSION"

have() { [ -x "$1/actionlint" ] && "$1/actionlint" -version 2>/dev/null | head -1 | grep -qx "$ACTIONLINT_VERSION"; }
if have "$dest"; then exit 0; fi
mkdir -p "$dest"
if [ -x "$machine/actionlint" ]; then
  cp -f "$machine/actionlint" "$dest/actionlint.tmp" && mv -f "$dest/actionlint.tmp" "$dest/actionlint"
  exit 0
fi

command -v go >/dev/null || { echo "80-actionlint: Go is required to build actionlint" >&2; exit 1; }
echo "80-actionlint: building actionlint $ACTIONLINT_VERSION (about a minute, once per machine)" >&2
mkdir -p "$machine"
# `go install` of a pinned version: module and dependencies come from the Go module proxy and
# are checked against the checksum database
CGO_ENABLED=0 GOBIN="$machine" GOFLAGS=-buildvcs=false \
  go install -trimpath -ldflags "-s -w -X $module.version=$ACTIONLINT_VERSION" \
  "$module/cmd/actionlint@$ACTIONLINT_VERSION"
cp -f "$machine/actionlint" "$dest/actionlint.tmp" && mv -f "$dest/actionlint.tmp" "$dest/actionlint"
"$dest/actionlint" -version >&2
