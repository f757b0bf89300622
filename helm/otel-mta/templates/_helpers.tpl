{{/* Name prefix of every resource. */}}
{{- define "otel-mta.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains "otel-mta" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-otel-mta" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Recommended labels; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "otel-mta.labels" -}}
{{ include "otel-mta.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: otel-mta
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "otel-mta.selectorLabels" -}}
app.kubernetes.io/name: otel-mta
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Hardened container securityContext shared by every container. */}}
{{- define "otel-mta.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "otel-mta.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "otel-mta.gatewayService" -}}
{{ include "otel-mta.fullname" . }}-gateway
{{- end -}}

{{/* Where sidecars send OTLP. */}}
{{- define "otel-mta.otlpEndpoint" -}}
{{- if .Values.sidecar.otlpEndpoint -}}
{{- .Values.sidecar.otlpEndpoint -}}
{{- else -}}
{{- $svc := ternary (printf "%s-loadbalancer" (include "otel-mta.fullname" .)) (include "otel-mta.gatewayService" .) .Values.loadBalancer.enabled -}}
{{- $port := ternary 4317 4318 (eq .Values.sidecar.otlpProtocol "grpc") -}}
{{- printf "http://%s.%s.svc:%v" $svc .Release.Namespace $port -}}
{{- end -}}
{{- end -}}

{{- define "otel-mta.sidecarSecretName" -}}
{{- .Values.sidecar.existingSecret | default (printf "%s-sidecar" (include "otel-mta.fullname" .)) -}}
{{- end -}}

{{/*
otel-mta.sidecarContainer: the sidecar container, to add to a ZoneMTA or
WildDuck pod's `containers:` list. Pair it with otel-mta.sidecarVolumes.
From a parent chart that has this chart as a dependency:
  containers:
    {{- include "otel-mta.sidecarContainer" (dict "Values" (index .Values "otel-mta") "Release" .Release "Chart" (dict "AppVersion" "0.1.0")) | nindent 4 }}
*/}}
{{- define "otel-mta.sidecarContainer" -}}
- name: otel-mta
  image: "{{ .Values.sidecar.image.repository }}:{{ .Values.sidecar.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  args: ["run"{{ if .Values.sidecar.config }}, "--config", "/etc/otel-mta/config.yaml"{{ end }}]
  envFrom:
    - configMapRef:
        name: {{ include "otel-mta.fullname" . }}-sidecar-env
    - secretRef:
        name: {{ include "otel-mta.sidecarSecretName" . }}
  env:
    - name: K8S_POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: K8S_NAMESPACE_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: K8S_NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: K8S_POD_UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: OTEL_MTA_DATA_DIR
      value: /var/lib/otel-mta
  ports:
    - {name: remote-log, containerPort: 31239, protocol: UDP}
    - {name: gelf-udp, containerPort: 12201, protocol: UDP}
    - {name: gelf-tcp, containerPort: 12201, protocol: TCP}
    - {name: events, containerPort: 9477, protocol: TCP}
    - {name: health, containerPort: 9478, protocol: TCP}
  livenessProbe:
    httpGet: {path: /healthz, port: 9478}
    initialDelaySeconds: 5
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: 9478}
    periodSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    {{- include "otel-mta.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - {name: otel-mta-data, mountPath: /var/lib/otel-mta}
    {{- if .Values.sidecar.config }}
    - {name: otel-mta-config, mountPath: /etc/otel-mta, readOnly: true}
    {{- end }}
{{- end -}}

{{/* otel-mta.sidecarVolumes: the volumes the sidecar container mounts. */}}
{{- define "otel-mta.sidecarVolumes" -}}
- name: otel-mta-data
  emptyDir:
    sizeLimit: {{ .Values.sidecar.dataSizeLimit }}
{{- if .Values.sidecar.config }}
- name: otel-mta-config
  configMap:
    name: {{ include "otel-mta.fullname" . }}-sidecar-config
    items: [{key: config.yaml, path: config.yaml}]
{{- end }}
{{- end -}}

{{/* Pipelines' exporter lists from the enabled backends. */}}
{{- define "otel-mta.gatewayOverrides" -}}
{{- $b := .Values.gateway.backends -}}
{{- $traces := list -}}{{- $logs := list -}}{{- $metrics := list -}}
{{- if $b.clickhouse.enabled -}}
{{- $traces = append $traces "clickhouse" -}}{{- $logs = append $logs "clickhouse" -}}{{- $metrics = append $metrics "clickhouse" -}}
{{- end -}}
{{- if $b.tempo.enabled }}{{ $traces = append $traces "otlp_grpc/tempo" }}{{ end -}}
{{- if $b.loki.enabled }}{{ $logs = append $logs "otlp_http/loki" }}{{ end -}}
{{- if $b.prometheus.enabled }}{{ $metrics = append $metrics "prometheus_remote_write/mimir" }}{{ end -}}
{{- if not $traces }}{{ fail "gateway.backends: traces need a backend - enable clickhouse or tempo" }}{{ end -}}
{{- if not $logs }}{{ fail "gateway.backends: logs need a backend - enable clickhouse or loki" }}{{ end -}}
{{- if not $metrics }}{{ fail "gateway.backends: metrics need a backend - enable clickhouse or prometheus" }}{{ end -}}
# Rendered by the otel-mta chart from gateway.backends: which exporters each pipeline uses.
service:
  pipelines:
    traces:
      exporters: {{ toJson $traces }}
    logs:
      exporters: {{ toJson $logs }}
    metrics:
      exporters: {{ toJson $metrics }}
{{- end -}}

{{/* GOMEMLIMIT for a Collector container: 80 % of its memory limit, in bytes,
so that Go collects harder before the kernel would kill it (the memory_limiter
refuses data at the same 80 %). The argument is a Kubernetes quantity. */}}
{{- define "otel-mta.gomemlimit" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- mulf . 0.8 | floor | int64 -}}
{{- else -}}
{{- $q := toString . -}}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $units := dict "" 1 "m" 0.001 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- mulf $n (get $units (trimPrefix $n $q)) 0.8 | floor | int64 -}}
{{- end -}}
{{- end -}}

{{/*
The alerting and recording rules (files/monitoring/rules/, copied from
monitoring/generated/ by helm/sync-monitoring.sh) as a dict with `groups`:
runbook URLs moved to monitoring.rules.runbookBaseUrl, monitoring.rules.alertLabels
added to every alert (an alert's own labels, severity first of all, win).
*/}}
{{- define "otel-mta.rules" -}}
{{- $cfg := .Values.monitoring.rules -}}
{{- $text := .Files.Get "files/monitoring/rules/otel-mta.rules.yaml" -}}
{{- with $cfg.runbookBaseUrl -}}
{{- $text = replace "https://github.com/otel-mta/otel-mta/blob/main/docs/runbooks.md#" (printf "%s#" .) $text -}}
{{- end -}}
{{- $rules := fromYaml $text -}}
{{- range $group := $rules.groups -}}
{{- range $rule := $group.rules -}}
{{- if and $rule.alert $cfg.alertLabels -}}
{{- $_ := set $rule "labels" (merge (deepCopy ($rule.labels | default dict)) $cfg.alertLabels) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
