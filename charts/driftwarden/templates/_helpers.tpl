{{/*
Names, labels, images and the checks that stop impossible values from rendering.
*/}}

{{/* The chart name, truncated to the 63 characters a label value allows. */}}
{{- define "driftwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The object name prefix: "<release>-<chart>", or the release name alone when it
already contains the chart name ("driftwarden" stays "driftwarden").
*/}}
{{- define "driftwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "driftwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: name and instance only. Selectors are immutable on Deployments, so
they must never include labels that change between releases (version, chart).
*/}}
{{- define "driftwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The labels that tie an object to this release: chart, instance, version, managed-by
and commonLabels. The generated CRD template (templates/crd-driftmonitors.yaml, from
`driftwarden generate`) adds these to its own name/part-of/component labels.
*/}}
{{- define "driftwarden.releaseLabels" -}}
helm.sh/chart: {{ include "driftwarden.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Every app.kubernetes.io/* label plus commonLabels; put on every operator object. */}}
{{- define "driftwarden.labels" -}}
app.kubernetes.io/name: {{ include "driftwarden.name" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: driftwarden
{{ include "driftwarden.releaseLabels" . }}
{{- end -}}

{{/*
The labels that pick out the operator's pods in NetworkPolicies: the selector labels
plus the component, so a DriftMonitor named like the release (its pods also carry
name=driftwarden and instance=<its name>) is never taken for the operator.
*/}}
{{- define "driftwarden.operatorPodLabels" -}}
{{ include "driftwarden.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "driftwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "driftwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The kopf peering object's name. */}}
{{- define "driftwarden.peeringName" -}}
{{- default (include "driftwarden.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: "repo@sha256:..." when a digest
is given (the tag is then only informative), else "repo:tag" with the tag defaulting
to the chart's appVersion.
Call: include "driftwarden.image" (dict "image" .Values.image "root" .)
*/}}
{{- define "driftwarden.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Refuse values that would render a broken or unsafe release. Each message says what
is wrong and which value fixes it. Included once, from the Deployment.
*/}}
{{- define "driftwarden.validate" -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the operator would run as the namespace's default ServiceAccount, which has none of its permissions. Name an existing ServiceAccount or set serviceAccount.create=true." -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.enabled=true: the ServiceMonitor scrapes the metrics Service, which metrics.enabled=false does not create." -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail (printf "replicaCount=%v: kopf has no per-object locks, so two operator replicas would both reconcile every DriftMonitor. Use replicaCount=1 (the Deployment restarts a failed pod) or 0 to pause." .Values.replicaCount) -}}
{{- end -}}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) -}}
{{- fail (printf "metrics.port and health.port are both %v: the operator serves /metrics and /healthz on separate listeners. Give them different ports." .Values.metrics.port) -}}
{{- end -}}
{{- include "driftwarden.validateRestricted" . -}}
{{- end -}}

{{/*
The Pod Security "restricted" profile: the chart's pods must be admitted into a
namespace that enforces it, so values that break it fail here, at render time, with
a message, instead of as a FailedCreate event on a ReplicaSet.
*/}}
{{- define "driftwarden.validateRestricted" -}}
{{- $pod := .Values.podSecurityContext -}}
{{- $ctr := .Values.containerSecurityContext -}}
{{- if not (or $pod.runAsNonRoot $ctr.runAsNonRoot) -}}
{{- fail "podSecurityContext.runAsNonRoot or containerSecurityContext.runAsNonRoot must be true (Pod Security \"restricted\")." -}}
{{- end -}}
{{- if and (hasKey $pod "runAsNonRoot") (not $pod.runAsNonRoot) -}}
{{- fail "podSecurityContext.runAsNonRoot=false is not allowed (Pod Security \"restricted\"); remove it or set it to true." -}}
{{- end -}}
{{- if and (hasKey $ctr "runAsNonRoot") (not $ctr.runAsNonRoot) -}}
{{- fail "containerSecurityContext.runAsNonRoot=false is not allowed (Pod Security \"restricted\"); remove it or set it to true." -}}
{{- end -}}
{{- range $where, $ctx := dict "podSecurityContext" $pod "containerSecurityContext" $ctr -}}
{{- if and (hasKey $ctx "runAsUser") (eq (int $ctx.runAsUser) 0) -}}
{{- fail (printf "%s.runAsUser=0 runs the operator as root, which Pod Security \"restricted\" forbids; use a non-zero UID (the image's user is 10001)." $where) -}}
{{- end -}}
{{- end -}}
{{- if or (not (hasKey $ctr "allowPrivilegeEscalation")) $ctr.allowPrivilegeEscalation -}}
{{- fail "containerSecurityContext.allowPrivilegeEscalation must be false (Pod Security \"restricted\")." -}}
{{- end -}}
{{- if $ctr.privileged -}}
{{- fail "containerSecurityContext.privileged=true is not allowed (Pod Security \"restricted\")." -}}
{{- end -}}
{{- $drop := list -}}
{{- with $ctr.capabilities }}{{ $drop = default (list) .drop }}{{ end -}}
{{- if not (has "ALL" $drop) -}}
{{- fail "containerSecurityContext.capabilities.drop must contain ALL (Pod Security \"restricted\")." -}}
{{- end -}}
{{- with $ctr.capabilities }}{{- range (default (list) .add) }}{{- if ne . "NET_BIND_SERVICE" -}}
{{- fail (printf "containerSecurityContext.capabilities.add may only contain NET_BIND_SERVICE (Pod Security \"restricted\"), got %s." .) -}}
{{- end }}{{- end }}{{- end -}}
{{- $seccomp := "" -}}
{{- with $pod.seccompProfile }}{{ $seccomp = .type }}{{ end -}}
{{- with $ctr.seccompProfile }}{{ $seccomp = .type }}{{ end -}}
{{- if not (has $seccomp (list "RuntimeDefault" "Localhost")) -}}
{{- fail "seccompProfile.type must be RuntimeDefault or Localhost on the pod or container security context (Pod Security \"restricted\")." -}}
{{- end -}}
{{- end -}}

{{/*
The operator's settings, as environment variables read by
driftwarden.operator's pydantic-settings model (prefix DRIFTWARDEN_OPERATOR__).
Maps and lists are JSON, which pydantic-settings parses for complex fields.
*/}}
{{- define "driftwarden.operatorEnv" -}}
- name: POD_ID
  # kopf identifies this operator in the peering by it; the pod name is unique.
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: DRIFTWARDEN_OPERATOR__NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: DRIFTWARDEN_OPERATOR__LOG_LEVEL
  value: {{ .Values.operator.logLevel | quote }}
- name: DRIFTWARDEN_OPERATOR__LOG_FORMAT
  value: {{ .Values.operator.logFormat | quote }}
- name: DRIFTWARDEN_OPERATOR__PEERING_NAME
  # Empty: kopf runs standalone.
  value: {{ if .Values.operator.peering.enabled }}{{ include "driftwarden.peeringName" . | quote }}{{ else }}""{{ end }}
- name: DRIFTWARDEN_OPERATOR__SHUTDOWN_TIMEOUT_SECONDS
  value: {{ .Values.operator.shutdownTimeoutSeconds | quote }}
- name: DRIFTWARDEN_OPERATOR__HEALTH_PORT
  value: {{ .Values.health.port | quote }}
- name: DRIFTWARDEN_OPERATOR__METRICS_PORT
  # 0 turns the /metrics listener off.
  value: {{ if .Values.metrics.enabled }}{{ .Values.metrics.port | quote }}{{ else }}"0"{{ end }}
- name: DRIFTWARDEN_OPERATOR__MODEL_SERVER_IMAGE
  value: {{ include "driftwarden.image" (dict "image" .Values.childImages.modelServer "root" .) | quote }}
- name: DRIFTWARDEN_OPERATOR__DRIFT_WORKER_IMAGE
  value: {{ include "driftwarden.image" (dict "image" .Values.childImages.driftWorker "root" .) | quote }}
- name: DRIFTWARDEN_OPERATOR__IMAGE_PULL_POLICY
  value: {{ .Values.childImages.pullPolicy | quote }}
- name: DRIFTWARDEN_OPERATOR__IMAGE_PULL_SECRETS
  value: {{ .Values.imagePullSecrets | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__MODEL_SERVER_RESOURCES
  value: {{ .Values.childResources.modelServer | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__DRIFT_WORKER_RESOURCES
  value: {{ .Values.childResources.driftWorker | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__SCRAPE_INTERVAL
  value: {{ .Values.monitoring.scrapeInterval | quote }}
- name: DRIFTWARDEN_OPERATOR__MONITORING_LABELS
  value: {{ .Values.monitoring.additionalLabels | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__DASHBOARDS_ENABLED
  value: {{ .Values.monitoring.grafanaDashboards.enabled | quote }}
- name: DRIFTWARDEN_OPERATOR__DASHBOARD_LABELS
  value: {{ .Values.monitoring.grafanaDashboards.labels | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__DASHBOARD_ANNOTATIONS
  value: {{ .Values.monitoring.grafanaDashboards.annotations | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__DASHBOARD_NAMESPACE
  # Empty: each dashboard ConfigMap lives beside its DriftMonitor.
  value: {{ .Values.monitoring.grafanaDashboards.namespace | quote }}
- name: DRIFTWARDEN_OPERATOR__OPERATOR_POD_LABELS
  # The monitors' worker NetworkPolicies admit the operator's pods by these labels.
  value: {{ include "driftwarden.operatorPodLabels" . | fromYaml | toJson | quote }}
- name: DRIFTWARDEN_OPERATOR__PROMETHEUS_PEER
  value: {{ .Values.networkPolicy.prometheus | toJson | quote }}
{{- with .Values.operator.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
