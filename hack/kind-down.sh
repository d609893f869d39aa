#!/usr/bin/env bash
# Deletes the kind cluster (and with it everything installed into it).
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need kind "nothing to delete without kind"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind delete cluster --name "$KIND_CLUSTER"
else
  dw_log "no kind cluster named '$KIND_CLUSTER'; nothing to do"
fi
