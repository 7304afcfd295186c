#!/usr/bin/env bash
# Build the Kubernetes binaries the tests run from the Go module proxy: kube-apiserver and
# kube-controller-manager (control plane), kube-scheduler, kube-proxy and kubelet (the real node).
#
# No package carries these binaries, so we build them from k8s.io/kubernetes in a throwaway
# module that pins every k8s.io/* staging module to the matching v0.x release. Results are cached
# in the repository's git-ignored .cache/ and in a machine-wide cache ($SAFEHOLD_MACHINE_CACHE,
# default ~/.cache/safehold) so a fresh clone on a machine that already built them rebuilds nothing.
# Each binary is cached on its own: only the missing ones are built, in one `go build` (shared
# packages compile once). Usage: build-kube.sh [BINARY...]   (default: all five)
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/kube/$KUBE_VERSION"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}/kube/$KUBE_VERSION"
all=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
if [ $# -gt 0 ]; then bins=("$@"); else bins=("${all[@]}"); fi

# atomic copy: a half-copied binary must never look installed
install_bin() { cp -f "$1" "$2.tmp" && chmod +x "$2.tmp" && mv -f "$2.tmp" "$2"; }

mkdir -p "$dest"
todo=()
for b in "${bins[@]}"; do
  case " ${all[*]} " in *" $b "*) ;; *) echo "build-kube: unknown binary $b (known: ${all[*]})" >&2; exit 2;; esac
  if [ -x "$dest/$b" ]; then continue; fi
  if [ -x "$machine/$b" ]; then install_bin "$machine/$b" "$dest/$b"; continue; fi
  todo+=("$b")
done
[ ${#todo[@]} -eq 0 ] && exit 0

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
{
  printf '//go:build tools\n\npackage kubebuild\n\nimport (\n'
  for b in "${all[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
  printf ')\n'
} > tools.go
go mod tidy >/dev/null 2>&1 || go mod tidy
export CGO_ENABLED=0
echo "build-kube: building ${todo[*]} $KUBE_VERSION (~3-6 min each on 2 cores, once per machine)" >&2
out="$work/bin.tmp"
rm -rf "$out" && mkdir -p "$out"
pkgs=()
for b in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
  -o "$out/" "${pkgs[@]}"
mkdir -p "$machine"
for b in "${todo[@]}"; do
  install_bin "$out/$b" "$dest/$b"
  install_bin "$out/$b" "$machine/$b"
done
rm -rf "$out"
