#!/usr/bin/env bash
# Creates the kind cluster of kind-config.yaml with the pinned node image.
# Idempotent: an existing cluster of the same name is kept.
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need_kind
dw_need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  dw_log "cluster '$KIND_CLUSTER' already exists; keeping it (make kind-down removes it)"
else
  dw_log "creating cluster '$KIND_CLUSTER' with $KIND_NODE_IMAGE"
  kind create cluster --name "$KIND_CLUSTER" --config "$DW_ROOT/kind-config.yaml" \
    --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubectl --context "$KIND_CONTEXT" get nodes
dw_log "next: make kind-images && make kind-install"
