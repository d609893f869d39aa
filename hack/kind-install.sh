#!/usr/bin/env bash
# Installs kube-prometheus-stack (pinned chart version) and then the Driftwarden chart
# with the images `make kind-images` loaded, wired so that kube-prometheus-stack's
# Prometheus, Alertmanager and Grafana pick up what the operator creates.
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need_kind
dw_need_cluster
dw_need helm "install helm 3 (make tools builds the pinned one into ~/.cache/driftwarden)"
helm_kind() { helm --kube-context "$KIND_CONTEXT" "$@"; }

dw_log "installing kube-prometheus-stack $KUBE_PROMETHEUS_STACK_VERSION as '$KPS_RELEASE' in '$KPS_NAMESPACE'"
# The chart repository is the user's own `helm repo add prometheus-community <url>`
# (the URL kube-prometheus-stack's README gives), so no host is baked in here.
helm_kind repo list -o yaml 2>/dev/null | grep -q '^- name: prometheus-community$' ||
  dw_die "helm has no 'prometheus-community' repository: add it as kube-prometheus-stack's README says (helm repo add prometheus-community <url>), then re-run make kind-install"
helm_kind repo update prometheus-community >/dev/null
# Alertmanager only reads AlertmanagerConfigs from its own namespace unless told
# otherwise, and the Grafana sidecar must look for dashboards in every namespace,
# because each DriftMonitor's objects live in the monitor's namespace.
helm_kind upgrade --install "$KPS_RELEASE" prometheus-community/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" \
  --namespace "$KPS_NAMESPACE" --create-namespace \
  --set-json 'alertmanager.alertmanagerSpec.alertmanagerConfigNamespaceSelector={}' \
  --set grafana.sidecar.dashboards.enabled=true \
  --set grafana.sidecar.dashboards.label=grafana_dashboard \
  --set-string grafana.sidecar.dashboards.labelValue=1 \
  --set grafana.sidecar.dashboards.searchNamespace=ALL \
  --wait --timeout 10m

dw_log "installing the Driftwarden chart as '$DW_RELEASE' in '$DW_NAMESPACE'"
kubectl --context "$KIND_CONTEXT" create namespace "$DW_NAMESPACE" --dry-run=client -o yaml |
  kubectl --context "$KIND_CONTEXT" apply -f -
# Every Driftwarden pod meets Pod Security "restricted"; enforce it so a regression
# shows up here rather than in a customer's cluster.
kubectl --context "$KIND_CONTEXT" label namespace "$DW_NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=restricted
split_image() { # IMAGE -> "repository tag"
  printf '%s %s' "${1%:*}" "${1##*:}"
}
read -r op_repo op_tag <<<"$(split_image "$(dw_image operator)")"
read -r ms_repo ms_tag <<<"$(split_image "$(dw_image model-server)")"
read -r dw_repo dw_tag <<<"$(split_image "$(dw_image drift-worker)")"
helm_kind upgrade --install "$DW_RELEASE" "$DW_ROOT/charts/driftwarden" \
  --namespace "$DW_NAMESPACE" \
  --set image.repository="$op_repo" --set-string image.tag="$op_tag" \
  --set childImages.modelServer.repository="$ms_repo" --set-string childImages.modelServer.tag="$ms_tag" \
  --set childImages.driftWorker.repository="$dw_repo" --set-string childImages.driftWorker.tag="$dw_tag" \
  --set image.pullPolicy=IfNotPresent --set childImages.pullPolicy=IfNotPresent \
  --set monitoring.additionalLabels.release="$KPS_RELEASE" \
  --set metrics.serviceMonitor.enabled=true \
  --wait --timeout 5m
kubectl --context "$KIND_CONTEXT" -n "$DW_NAMESPACE" rollout status "deployment/$DW_RELEASE" --timeout 120s
dw_log "next: make kind-demo"
