#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from the Go module proxy.
#
# No package carries these binaries, so we build them from k8s.io/kubernetes in a throwaway
# module that pins every k8s.io/* staging module to the matching v0.x release. Results are cached
# in the repository's git-ignored .cache/ and in a machine-wide cache ($SAFEHOLD_MACHINE_CACHE,
# default ~/.cache/safehold) so a fresh clone on a machine that already built them rebuilds nothing.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/kube/$KUBE_VERSION"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}/kube/$KUBE_VERSION"
bins=(kube-apiserver kube-controller-manager)

have_all() { for b in "${bins[@]}"; do [ -x "$1/$b" ] || return 1; done; }

if have_all "$dest"; then exit 0; fi
mkdir -p "$dest"
if have_all "$machine"; then
  for b in "${bins[@]}"; do cp -f "$machine/$b" "$dest/$b.tmp" && mv -f "$dest/$b.tmp" "$dest/$b"; done
  exit 0
fi

command -v go >/dev/null || { echo "build-kube: Go is required (see README)" >&2; exit 1; }
work="$root/.cache/build/kube-$KUBE_VERSION"
mkdir -p "$work"
cd "$work"
staging_version="v0.${KUBE_VERSION#v1.}"

modfile="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
{
  echo "module safehold.dev/kubebuild"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile" |
    while read -r m; do echo "	$m => $m $staging_version"; done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
go mod tidy >/dev/null 2>&1 || go mod tidy
export CGO_ENABLED=0
for b in "${bins[@]}"; do
  echo "build-kube: building $b $KUBE_VERSION (several minutes on 2 cores, once per machine)" >&2
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
    -o "$dest/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv -f "$dest/$b.tmp" "$dest/$b"
done
mkdir -p "$machine"
for b in "${bins[@]}"; do cp -f "$dest/$b" "$machine/$b.tmp" && mv -f "$machine/$b.tmp" "$machine/$b"; done
