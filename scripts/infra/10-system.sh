#!/usr/bin/env bash
# Debian packages: PostgreSQL 15 server + tools, MariaDB 10.11 (server, client, mariadb-backup),
# SQLite, the compression CLIs used as benchmark baselines, mydumper and pgBackRest (peers in
# make bench), GNU time (peak RSS),
# systemd (`systemd-analyze verify` of the unit) and headless Chromium (`stats --output html`).
set -euo pipefail
pkgs=(postgresql-15 postgresql-client-15 mariadb-server mariadb-client mariadb-backup sqlite3
      zstd lz4 bzip2 gzip time mydumper pgbackrest unzip systemd chromium)
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
