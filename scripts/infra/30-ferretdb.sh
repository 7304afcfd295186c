#!/usr/bin/env bash
# Build FerretDB (MongoDB wire protocol on SQLite) from the Go module proxy.
#
# No registry reachable here carries mongod, so the Mongo tests run against FerretDB v1 with its
# pure-Go SQLite backend (no second server). The module source is copied out of the Go module
# cache and given build/version/version.txt (FerretDB panics at start-up without it when it is the
# main module), then built with CGO_ENABLED=0. The binary lands in the repository's git-ignored
# .cache/ferretdb/<version>/ and in the machine-wide cache ($SAFEHOLD_MACHINE_CACHE, default
# ~/.cache/safehold) so a fresh clone on a machine that already built it rebuilds nothing.
set -euo pipefail

FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
module="github.com/FerretDB/FerretDB"
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/.cache/ferretdb/$FERRETDB_VERSION"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}/ferretdb/$FERRETDB_VERSION"

if [ -x "$dest/ferretdb" ]; then exit 0; fi
mkdir -p "$dest"
if [ -x "$machine/ferretdb" ]; then
  cp -f "$machine/ferretdb" "$dest/ferretdb.tmp" && mv -f "$dest/ferretdb.tmp" "$dest/ferretdb"
  exit 0
fi

command -v go >/dev/null || { echo "30-ferretdb: Go is required to build FerretDB" >&2; exit 1; }
echo "30-ferretdb: building ferretdb $FERRETDB_VERSION (a few minutes on 2 cores, once per machine)" >&2
moddir="$(cd /tmp && go mod download -json "$module@$FERRETDB_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
[ -d "$moddir" ] || { echo "30-ferretdb: go mod download of $module@$FERRETDB_VERSION failed" >&2; exit 1; }

src="$root/.cache/build/ferretdb-$FERRETDB_VERSION"
rm -rf "$src"
mkdir -p "$(dirname "$src")"
cp -r "$moddir" "$src"
chmod -R u+w "$src"
echo "$FERRETDB_VERSION" > "$src/build/version/version.txt"
echo "safehold-test" > "$src/build/version/package.txt"

cd "$src"
# The module's go.mod asks for toolchain go1.24.x; any newer local Go builds it as is.
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod \
  go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dest/ferretdb.tmp" ./cmd/ferretdb
mv -f "$dest/ferretdb.tmp" "$dest/ferretdb"
rm -rf "$src"

mkdir -p "$machine"
cp -f "$dest/ferretdb" "$machine/ferretdb.tmp" && mv -f "$machine/ferretdb.tmp" "$machine/ferretdb"
"$dest/ferretdb" --version >&2
