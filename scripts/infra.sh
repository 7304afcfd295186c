#!/usr/bin/env bash
# Install everything the test suite starts: database servers, storage emulators, the Kubernetes
# control plane and helm. Idempotent and quick when everything is present; each part lives in
# scripts/infra/NN-name.sh and is run in name order.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for part in "$root"/scripts/infra/*.sh; do
  echo "infra: $(basename "$part")" >&2
  bash "$part"
done
