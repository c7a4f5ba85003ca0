{{/* Names ------------------------------------------------------------------ */}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Leaves room for the longest suffix, "-room-headless" (14 chars). */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The public Service (edges, or the standalone pod). */}}
{{- define "switchboard.publicService" -}}
{{- include "switchboard.fullname" . -}}
{{- end -}}

{{- define "switchboard.roomHeadlessService" -}}
{{- printf "%s-room-headless" (include "switchboard.fullname" .) -}}
{{- end -}}

{{/* What edges are given as --room: every address behind the headless Service is a replica. */}}
{{- define "switchboard.roomURL" -}}
{{- printf "http://%s.%s.svc:50051" (include "switchboard.roomHeadlessService" .) .Release.Namespace -}}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "switchboard.redisSecretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else -}}
{{- printf "%s-redis" (include "switchboard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{- define "switchboard.iceSecretName" -}}
{{- $c := .Values.client.iceCredentials -}}
{{- if $c.existingSecret -}}
{{- $c.existingSecret -}}
{{- else -}}
{{- printf "%s-ice" (include "switchboard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* true when ICE credentials are configured (inline or from a Secret). */}}
{{- define "switchboard.iceCredentials" -}}
{{- $c := .Values.client.iceCredentials -}}
{{- if or $c.existingSecret $c.username $c.credential -}}true{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* (dict "root" $ "component" "edge") */}}
{{- define "switchboard.componentSelectorLabels" -}}
{{ include "switchboard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Validation --------------------------------------------------------------- */}}

{{- define "switchboard.validate" -}}
{{- if eq .Values.mode "standalone" -}}
{{- if ne (int .Values.standalone.replicas) 1 -}}
{{- fail "standalone.replicas must be 1: the standalone store is in memory (use mode: distributed to scale)" -}}
{{- end -}}
{{- else if eq .Values.mode "distributed" -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "mode: distributed needs Redis: set redis.url or redis.existingSecret" -}}
{{- end -}}
{{- if and .Values.edge.autoscaling.enabled (gt (int .Values.edge.autoscaling.minReplicas) (int .Values.edge.autoscaling.maxReplicas)) -}}
{{- fail "edge.autoscaling.minReplicas must not exceed edge.autoscaling.maxReplicas" -}}
{{- end -}}
{{- else -}}
{{- fail (printf "mode must be standalone or distributed, not %q" .Values.mode) -}}
{{- end -}}
{{- $c := .Values.client.iceCredentials -}}
{{- if and (not $c.existingSecret) (or $c.username $c.credential) (not (and $c.username $c.credential)) -}}
{{- fail "client.iceCredentials: set both username and credential (or existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds of a component: the configured value, which must
exceed preStop sleep + shutdown grace, or that sum + 10 s.
(dict "cfg" .Values.edge "grace" <seconds the process may take after SIGTERM> "name" "edge")
*/}}
{{- define "switchboard.terminationGrace" -}}
{{- $need := add (int .cfg.preStopSleepSeconds) (int .grace) -}}
{{- if kindIs "invalid" .cfg.terminationGracePeriodSeconds -}}
{{- add $need 10 -}}
{{- else -}}
{{- $t := int .cfg.terminationGracePeriodSeconds -}}
{{- if le $t $need -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + shutdown grace (%d)" .name $t $need) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/* Pod template ----------------------------------------------------------- */}}

{{/*
The pod template every Deployment uses.
(dict "root" $ "component" "edge" "cfg" .Values.edge "grace" 10
      "args" (list ...) "env" <YAML list text> "ports" <YAML list text> "checksums" (dict))
*/}}
{{- define "switchboard.podTemplate" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
{{- $sel := dict "root" $root "component" .component -}}
metadata:
  labels:
    {{- include "switchboard.componentLabels" $sel | nindent 4 }}
    {{- with $cfg.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $ann := merge (dict) ($cfg.podAnnotations | default (dict)) .checksums }}
  {{- if $root.Values.metrics.scrapeAnnotations }}
  {{- $_ := set $ann "prometheus.io/scrape" "true" }}
  {{- $_ := set $ann "prometheus.io/port" "9090" }}
  {{- $_ := set $ann "prometheus.io/path" "/metrics" }}
  {{- end }}
  {{- with $ann }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "switchboard.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cfg.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "switchboard.terminationGrace" (dict "cfg" $cfg "grace" .grace "name" .component) }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "switchboard.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        {{- range $cfg.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        {{- with $root.Values.logLevel }}
        - name: RUST_LOG
          value: {{ . | quote }}
        {{- end }}
        {{- with $root.Values.tracing }}
        {{- if .otlpEndpoint }}
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: {{ .otlpEndpoint | quote }}
        - name: OTEL_SERVICE_NAME
          value: {{ ternary .serviceName (printf "%s-%s" .serviceName $.component) (eq $.component "standalone") | quote }}
        {{- $attrs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "service.namespace=%s" $root.Release.Namespace) }}
        {{- range $k, $v := .resourceAttributes }}
        {{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
        {{- end }}
        - name: OTEL_RESOURCE_ATTRIBUTES
          value: {{ join "," $attrs | quote }}
        {{- with .sampler }}
        - name: OTEL_TRACES_SAMPLER
          value: {{ . | quote }}
        {{- end }}
        {{- with .samplerArg }}
        - name: OTEL_TRACES_SAMPLER_ARG
          value: {{ . | quote }}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- with .env }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $cfg.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- .ports | nindent 8 }}
        - name: admin
          containerPort: 9090
          protocol: TCP
      {{- with $root.Values.probes }}
      {{- if .startup.enabled }}
      startupProbe:
        httpGet:
          path: /livez
          port: admin
        periodSeconds: {{ .startup.periodSeconds }}
        timeoutSeconds: {{ .startup.timeoutSeconds }}
        failureThreshold: {{ .startup.failureThreshold }}
      {{- end }}
      livenessProbe:
        httpGet:
          path: /livez
          port: admin
        initialDelaySeconds: {{ .liveness.initialDelaySeconds }}
        periodSeconds: {{ .liveness.periodSeconds }}
        timeoutSeconds: {{ .liveness.timeoutSeconds }}
        failureThreshold: {{ .liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
        initialDelaySeconds: {{ .readiness.initialDelaySeconds }}
        periodSeconds: {{ .readiness.periodSeconds }}
        timeoutSeconds: {{ .readiness.timeoutSeconds }}
        failureThreshold: {{ .readiness.failureThreshold }}
      {{- end }}
      {{- if gt (int $cfg.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ int $cfg.preStopSleepSeconds }}
      {{- end }}
      {{- with $cfg.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
  {{- with $cfg.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cfg.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cfg.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $cfg.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml $cfg.topologySpreadConstraints | nindent 4 }}
  {{- else if $root.Values.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $root.Values.topologySpread.topologyKeys }}
    - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
      topologyKey: {{ . }}
      whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "switchboard.componentSelectorLabels" $sel | nindent 10 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Arguments common to the client-facing roles (standalone, edge). */}}
{{- define "switchboard.clientArgs" -}}
{{- $args := list "--listen=0.0.0.0:8080" (printf "--shutdown-grace=%ds" (int .Values.client.shutdownGraceSeconds)) -}}
{{- range .Values.client.iceServers -}}
{{- $args = append $args (printf "--ice-server=%s" .) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* Arguments every role takes. (dict "root" $ "cfg" .Values.edge) */}}
{{- define "switchboard.globalArgs" -}}
{{- $args := list "--admin-listen=0.0.0.0:9090" (printf "--log-format=%s" .root.Values.logFormat) -}}
{{- if not (kindIs "invalid" .cfg.workerThreads) -}}
{{- $args = append $args (printf "--worker-threads=%d" (int .cfg.workerThreads)) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* Env of the client-facing roles: ICE credentials from a Secret. */}}
{{- define "switchboard.clientEnv" -}}
{{- if include "switchboard.iceCredentials" . -}}
{{- $c := .Values.client.iceCredentials -}}
- name: SWITCHBOARD_ICE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.iceSecretName" . }}
      key: {{ ternary $c.usernameKey "username" (not (empty $c.existingSecret)) }}
- name: SWITCHBOARD_ICE_CREDENTIAL
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.iceSecretName" . }}
      key: {{ ternary $c.credentialKey "credential" (not (empty $c.existingSecret)) }}
{{- end -}}
{{- end -}}

{{/* Annotations that roll the pods when a chart-made Secret changes. */}}
{{- define "switchboard.iceChecksum" -}}
{{- $c := .Values.client.iceCredentials -}}
{{- if and (not $c.existingSecret) $c.username -}}
{{- printf "%s/%s" $c.username $c.credential | sha256sum -}}
{{- end -}}
{{- end -}}
