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

{{/*
otel-mta.gatewayBackends: the backends switched on in gateway.backends, as a
JSON list of {name, file, exporter, signals}; `file` is the backend's file in
files/collector/backends/ (copies of collector-config/backends/), which adds
`exporter` and one pipeline per signal. Use with fromJsonArray.
*/}}
{{- define "otel-mta.gatewayBackends" -}}
{{- $b := .Values.gateway.backends -}}
{{- $otlpFile := ternary "otlp-grpc.yaml" "otlp-http.yaml" (eq $b.otlp.protocol "grpc") -}}
{{- $otlpExporter := ternary "otlp_grpc/otlp" "otlp_http/otlp" (eq $b.otlp.protocol "grpc") -}}
{{- $all := list
  (dict "name" "clickhouse" "file" "clickhouse.yaml" "exporter" "clickhouse" "signals" (list "traces" "logs" "metrics"))
  (dict "name" "prometheus" "file" "prometheus.yaml" "exporter" "prometheus_remote_write/prometheus" "signals" (list "metrics"))
  (dict "name" "victoriametrics" "file" "victoriametrics.yaml" "exporter" "otlp_http/victoriametrics" "signals" (list "metrics"))
  (dict "name" "tempo" "file" "tempo.yaml" "exporter" "otlp_grpc/tempo" "signals" (list "traces"))
  (dict "name" "jaeger" "file" "jaeger.yaml" "exporter" "otlp_grpc/jaeger" "signals" (list "traces"))
  (dict "name" "loki" "file" "loki.yaml" "exporter" "otlp_http/loki" "signals" (list "logs"))
  (dict "name" "victorialogs" "file" "victorialogs.yaml" "exporter" "otlp_http/victorialogs" "signals" (list "logs"))
  (dict "name" "otlp" "file" $otlpFile "exporter" $otlpExporter "signals" (list "traces" "logs" "metrics"))
-}}
{{- $on := list -}}
{{- range $all }}{{ if (index $b .name).enabled }}{{ $on = append $on . }}{{ end }}{{ end -}}
{{- if $b.otlp.enabled -}}
{{- $e := $b.otlp.endpoint -}}
{{- if not $e }}{{ fail "gateway.backends.otlp.endpoint: set it (grpc: host:port; http/protobuf: a base URL)" }}{{ end -}}
{{- if and (eq $b.otlp.protocol "grpc") (contains "://" $e) }}{{ fail (printf "gateway.backends.otlp.endpoint: with protocol grpc give host:port, not %q" $e) }}{{ end -}}
{{- if and (ne $b.otlp.protocol "grpc") (not (contains "://" $e)) }}{{ fail (printf "gateway.backends.otlp.endpoint: with protocol http/protobuf give a URL (https://host:4318), not %q" $e) }}{{ end -}}
{{- end -}}
{{- toJson $on -}}
{{- end -}}

{{/* Environment variable holding one secret header of a backend: (list backend header). */}}
{{- define "otel-mta.headerEnv" -}}
{{- printf "OTELCOL_%s_HEADER_%s" (index . 0) (regexReplaceAll "[^A-Za-z0-9]" (index . 1) "_") | upper -}}
{{- end -}}

{{/* The gateway's environment for the backends switched on: endpoints, credentials, secret headers. */}}
{{- define "otel-mta.gatewayBackendEnv" -}}
{{- $b := .Values.gateway.backends -}}
{{- $tenant := false -}}
{{- range $be := include "otel-mta.gatewayBackends" . | fromJsonArray }}
{{- $v := index $b $be.name }}
{{- if eq $be.name "clickhouse" }}
- {name: CLICKHOUSE_ENDPOINT, value: {{ $v.endpoint | quote }}}
- {name: CLICKHOUSE_DATABASE, value: {{ $v.database | quote }}}
- {name: CLICKHOUSE_USERNAME, value: {{ $v.username | quote }}}
- {name: CLICKHOUSE_TTL, value: {{ $v.ttl | quote }}}
{{- with $v.passwordSecret }}
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $v.passwordSecretKey | quote }}}
{{- end }}
{{- else if eq $be.name "prometheus" }}
- {name: PROMETHEUS_REMOTE_WRITE_ENDPOINT, value: {{ $v.endpoint | quote }}}
{{- $tenant = true }}
{{- else if eq $be.name "victoriametrics" }}
- {name: VICTORIAMETRICS_ENDPOINT, value: {{ $v.endpoint | trimSuffix "/" | quote }}}
{{- else if eq $be.name "tempo" }}
- {name: TEMPO_ENDPOINT, value: {{ $v.endpoint | quote }}}
- {name: TEMPO_INSECURE, value: {{ $v.insecure | quote }}}
{{- $tenant = true }}
{{- else if eq $be.name "jaeger" }}
- {name: JAEGER_ENDPOINT, value: {{ $v.endpoint | quote }}}
- {name: JAEGER_INSECURE, value: {{ $v.insecure | quote }}}
{{- else if eq $be.name "loki" }}
- {name: LOKI_OTLP_ENDPOINT, value: {{ $v.endpoint | trimSuffix "/" | quote }}}
{{- $tenant = true }}
{{- else if eq $be.name "victorialogs" }}
- {name: VICTORIALOGS_ENDPOINT, value: {{ $v.endpoint | trimSuffix "/" | quote }}}
{{- else if eq $be.name "otlp" }}
- {name: OTLP_ENDPOINT, value: {{ $v.endpoint | quote }}}
{{- if eq $v.protocol "grpc" }}
- {name: OTLP_INSECURE, value: {{ $v.insecure | quote }}}
{{- end }}
{{- end }}
{{- range $header, $ref := $v.secretHeaders }}
- name: {{ include "otel-mta.headerEnv" (list $be.name $header) }}
  valueFrom:
    secretKeyRef: {name: {{ $ref.secret | quote }}, key: {{ $ref.key | quote }}}
{{- end }}
{{- end }}
{{- if $tenant }}
- {name: OTELCOL_TENANT_ID, value: {{ .Values.gateway.tenantId | quote }}}
{{- end }}
{{- end -}}

{{/* A Collector config overlay with the backends' headers (plain and from
Secrets); empty when no backend that is on has any. */}}
{{- define "otel-mta.gatewayBackendHeaders" -}}
{{- $exporters := dict -}}
{{- range $be := include "otel-mta.gatewayBackends" . | fromJsonArray -}}
{{- $v := index $.Values.gateway.backends $be.name -}}
{{- $h := dict -}}
{{- range $k, $val := $v.headers }}{{ $_ := set $h $k (replace "$" "$$" $val) }}{{ end -}}
{{- range $k, $ref := $v.secretHeaders }}{{ $_ := set $h $k (printf "${env:%s}" (include "otel-mta.headerEnv" (list $be.name $k))) }}{{ end -}}
{{- if $h -}}
{{- /* remote write keeps its HTTP client settings under `http` */ -}}
{{- $_ := set $exporters $be.exporter (ternary (dict "http" (dict "headers" $h)) (dict "headers" $h) (eq $be.name "prometheus")) -}}
{{- end -}}
{{- end -}}
{{- if $exporters -}}
# Rendered by the otel-mta chart from gateway.backends.<name>.headers / .secretHeaders.
{{ dict "exporters" $exporters | toYaml }}
{{- end -}}
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
