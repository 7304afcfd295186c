#!/usr/bin/env bash
# Debian packages for the real single-node cluster (tests/infra/node.py): the container runtime
# (containerd + runc), the CNI plugins (bridge, host-local, portmap), iptables/conntrack for
# kube-proxy, and buildah + debootstrap to build images without a registry
# (scripts/infra/60-node-images.sh). gcc (for the static pause binary) is on the machine already.
# Idempotent; a no-op when everything is installed.
set -euo pipefail
pkgs=(runc containerd containernetworking-plugins iptables conntrack buildah debootstrap gcc
      libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "infra: missing Debian packages (${missing[*]}); run 'make infra' as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# other installs may hold the dpkg lock for a while (make infra of another checkout)
apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
