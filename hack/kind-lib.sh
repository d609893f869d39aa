# shellcheck shell=bash
# Shared settings of hack/kind-*.sh. Source it; do not run it.
# Versions come from versions.env (via hack/lib.sh); everything else can be overridden
# from the environment, e.g. KIND_CLUSTER=mine make kind-up.
set -euo pipefail
DW_TOOL=${DW_TOOL:-kind}
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_CLUSTER=${KIND_CLUSTER:-driftwarden}
export KIND_CONTEXT="kind-$KIND_CLUSTER"
# Images are built locally and loaded into the nodes; a tag other than "latest" makes
# the default IfNotPresent pull policy use the loaded copy.
IMAGE_PREFIX=${IMAGE_PREFIX:-driftwarden}
IMAGE_TAG=${IMAGE_TAG:-dev}
KPS_RELEASE=${KPS_RELEASE:-kps}
KPS_NAMESPACE=${KPS_NAMESPACE:-monitoring}
DW_RELEASE=${DW_RELEASE:-driftwarden}
DW_NAMESPACE=${DW_NAMESPACE:-driftwarden-system}
DEMO_NAMESPACE=${DEMO_NAMESPACE:-default}
GRAFANA_PORT=${GRAFANA_PORT:-3000}

# The pinned helm from `make tools`, when built, wins over whatever is on PATH.
if [[ -x "$(dw_tool_dir helm "$HELM_VERSION")/bin/helm" ]]; then
  PATH="$(dw_tool_dir helm "$HELM_VERSION")/bin:$PATH"
fi

# dw_need CMD HINT -> fails with HINT unless CMD is on PATH.
dw_need() {
  command -v "$1" >/dev/null 2>&1 || dw_die "$1 is not on PATH: $2"
}

dw_need_kind() {
  dw_need docker "the kind path needs a running Docker engine (https://docs.docker.com/engine/install/)"
  docker info >/dev/null 2>&1 || dw_die "docker is installed but its engine is not reachable; start Docker and re-run"
  dw_need kind "install kind $KIND_VERSION: go install sigs.k8s.io/kind@$KIND_VERSION (or https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
  local have
  have="$(kind version -q 2>/dev/null || true)"
  [[ $have == "$KIND_VERSION" ]] ||
    dw_log "warning: kind $have is not the pinned $KIND_VERSION (versions.env); continuing"
}

dw_need_cluster() {
  kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER" ||
    dw_die "kind cluster '$KIND_CLUSTER' does not exist; run 'make kind-up' first"
}

# The image references `make kind-images` builds and `make kind-install` deploys.
dw_image() { printf '%s/%s:%s' "$IMAGE_PREFIX" "$1" "$IMAGE_TAG"; }
