#!/usr/bin/env bash
# Installs every pinned tool the tests and the demo need (versions: versions.env).
# Each hack/install-<tool>.sh is idempotent and caches its output under
# ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}, so a fresh clone reuses the builds.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
for script in hack/install-*.sh; do
  [[ $script == hack/install-tools.sh ]] && continue
  bash "$script"
done
