#!/usr/bin/env bash
# Builds the operator, model-server and drift-worker images (hack/images.sh, with Docker)
# and loads them into the kind nodes (no registry involved).
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need_kind
dw_need_cluster
DW_ENGINE=docker IMAGE_PREFIX="$IMAGE_PREFIX" IMAGE_TAG="$IMAGE_TAG" bash "$DW_ROOT/hack/images.sh"
for component in operator model-server drift-worker; do
  image="$(dw_image "$component")"
  dw_log "loading $image into kind cluster '$KIND_CLUSTER'"
  kind load docker-image --name "$KIND_CLUSTER" "$image"
done
dw_log "next: make kind-install"
