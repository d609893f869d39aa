#!/usr/bin/env bash
# Fetches the real prometheus-operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule,
# AlertmanagerConfig, Prometheus, Alertmanager, ...) of PROMETHEUS_OPERATOR_VERSION
# (versions.env) from its Go module into
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/prometheus-operator-<v>/crds/*.yaml
# The test control plane applies every file there. Idempotent.
set -euo pipefail
export DW_TOOL=prometheus-operator-crds
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

v=$PROMETHEUS_OPERATOR_VERSION
dir="$(dw_tool_dir prometheus-operator "$v")"
required=(servicemonitors podmonitors prometheusrules alertmanagerconfigs prometheuses alertmanagers)
if [[ -f $dir/.complete ]]; then
  dw_log "$v CRDs already in $dir/crds"
  exit 0
fi
command -v go >/dev/null 2>&1 || dw_die "the Go toolchain is not on PATH; it fetches github.com/prometheus-operator/prometheus-operator@$v from the Go module proxy"
dw_log "fetching github.com/prometheus-operator/prometheus-operator@$v"
rm -rf "$dir"
mkdir -p "$dir/crds"
src="$(dw_go_mod_download "github.com/prometheus-operator/prometheus-operator@$v" Dir)"
[[ -d $src/example/prometheus-operator-crd ]] ||
  dw_die "github.com/prometheus-operator/prometheus-operator@$v has no example/prometheus-operator-crd folder; check PROMETHEUS_OPERATOR_VERSION against 'go list -m -versions github.com/prometheus-operator/prometheus-operator'"
install -m 0644 "$src"/example/prometheus-operator-crd/*.yaml "$dir/crds/"
for kind in "${required[@]}"; do
  [[ -f $dir/crds/monitoring.coreos.com_$kind.yaml ]] || dw_die "prometheus-operator $v ships no $kind CRD"
done
dw_mark_complete "$dir"
dw_log "installed $(find "$dir/crds" -name "*.yaml" | wc -l) CRDs into $dir/crds"
