#!/usr/bin/env bash
# Applies the example DriftMonitor, waits for it to become Ready, and port-forwards
# Grafana to http://127.0.0.1:$GRAFANA_PORT until Ctrl-C.
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "$0")/kind-lib.sh"
dw_need_kind
dw_need_cluster
k() { kubectl --context "$KIND_CONTEXT" "$@"; }

example="$DW_ROOT/manifests/examples/diamonds.yaml"
[[ -f $example ]] || dw_die "$example is missing; run 'make generate' to write the example manifests"
dw_log "applying $example in namespace '$DEMO_NAMESPACE'"
k -n "$DEMO_NAMESPACE" apply -f "$example"
monitor="$(k -n "$DEMO_NAMESPACE" get -f "$example" -o jsonpath='{.metadata.name}')"
dw_log "waiting for DriftMonitor '$monitor' to become Ready (model server and drift workers starting)"
k -n "$DEMO_NAMESPACE" wait "driftmonitor/$monitor" --for=condition=Ready --timeout=300s
k -n "$DEMO_NAMESPACE" get driftmonitors

password="$(k -n "$KPS_NAMESPACE" get secret "$KPS_RELEASE-grafana" -o jsonpath='{.data.admin-password}' | base64 -d)"
cat <<MSG

Grafana: http://127.0.0.1:$GRAFANA_PORT   (user admin, password $password)
  Dashboards > Driftwarden / $monitor
Send traffic that drifts halfway (from another terminal):
  kubectl --context $KIND_CONTEXT -n $DEMO_NAMESPACE port-forward svc/$monitor-model 8000:8000 &
  .venv/bin/driftwarden demo --model-url http://127.0.0.1:8000
Ctrl-C stops the port-forward; 'make kind-down' deletes the cluster.

MSG
exec kubectl --context "$KIND_CONTEXT" -n "$KPS_NAMESPACE" port-forward --address 127.0.0.1 \
  "svc/$KPS_RELEASE-grafana" "$GRAFANA_PORT:80"
