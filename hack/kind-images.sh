#!/usr/bin/env bash
# Builds the operator, model-server and drift-worker images and loads them into the
# kind nodes (no registry involved).
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need_kind
dw_need_cluster
for component in operator model-server drift-worker; do
  folder=${component//-/_}
  image="$(dw_image "$component")"
  dw_log "building $image from $folder/Dockerfile"
  docker build --file "$DW_ROOT/$folder/Dockerfile" --tag "$image" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-}" \
    "$DW_ROOT"
  dw_log "loading $image into kind cluster '$KIND_CLUSTER'"
  kind load docker-image --name "$KIND_CLUSTER" "$image"
done
dw_log "next: make kind-install"
