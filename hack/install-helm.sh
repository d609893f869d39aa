#!/usr/bin/env bash
# Builds the pinned helm (HELM_VERSION in versions.env) with `go install` into
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/helm-<v>/bin/helm
# Idempotent: a finished install (its `.complete` marker) is reused.
set -euo pipefail
export DW_TOOL=helm
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

v=$HELM_VERSION
major="${v#v}"; major="${major%%.*}"
dir="$(dw_tool_dir helm "$v")"
if dw_is_complete "$dir" helm; then
  dw_log "$v already built in $dir/bin"
  exit 0
fi
started=$SECONDS
dw_log "building $v (a few minutes on a cold Go cache)"
rm -rf "$dir"
mkdir -p "$dir/bin"
src="$(dw_go_mod_download "helm.sh/helm/v$major@$v" Dir)"
[[ -f $src/go.mod ]] || dw_die "go mod download helm.sh/helm/v$major@$v failed; check HELM_VERSION against 'go list -m -versions helm.sh/helm/v$major'"
dw_require_go "$(dw_go_mod_line go "$src/go.mod")"

# Helm's Makefile stamps its version and the Kubernetes version that `helm template`
# and `helm lint` assume (Capabilities.KubeVersion) from its client-go requirement;
# without the latter, charts with a kubeVersion constraint render as for Kubernetes 1.20.
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$src/go.mod")"
[[ $client_go =~ ^v0\.([0-9]+)\. ]] || dw_die "cannot read the k8s.io/client-go version from $src/go.mod"
k8s_minor=${BASH_REMATCH[1]}
pkg="helm.sh/helm/v$major"
ldflags="-s -w -X $pkg/internal/version.version=$v -X $pkg/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $pkg/$p.k8sVersionMajor=1 -X $pkg/$p.k8sVersionMinor=$k8s_minor"
done
(cd "$dir" && CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath -ldflags "$ldflags" "$pkg/cmd/helm@$v") ||
  dw_die "go install $pkg/cmd/helm@$v failed (see above)"
grep -q "^$v" <<<"$("$dir/bin/helm" version --short)" || dw_die "built helm does not report $v"
dw_mark_complete "$dir"
dw_log "built $v in $((SECONDS - started)) s -> $dir/bin"
