{{/* Names, labels, images and shared fragments. */}}

{{- define "runstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runstream.fullname" -}}
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

{{/* Common labels; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "runstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: runstream
{{ include "runstream.selectorLabels" . }}
{{- end -}}

{{- define "runstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of a Runstream service; call with (dict "ctx" $ "service" "gateway"). */}}
{{- define "runstream.image" -}}
{{- $img := .ctx.Values.image -}}
{{- $repo := printf "%s%s" $img.prefix (.service | replace "_" "-") -}}
{{- if $img.registry -}}{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $repo -}}{{- end -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "runstream.secretName" -}}
{{- default (printf "%s-secrets" (include "runstream.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "runstream.natsHost" -}}
{{- printf "%s-nats" (include "runstream.fullname" .) -}}
{{- end -}}

{{- define "runstream.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "runstream.natsHost" .) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled=false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{- define "runstream.postgresHost" -}}
{{- printf "%s-postgres" (include "runstream.fullname" .) -}}
{{- end -}}

{{/* Secret and key holding the database URL (RUNSTREAM_DATABASE_URL). */}}
{{- define "runstream.databaseSecretName" -}}
{{- if and (not .Values.postgres.enabled) .Values.postgres.existingSecret -}}
{{- .Values.postgres.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "runstream.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "runstream.databaseSecretKey" -}}
{{- if and (not .Values.postgres.enabled) .Values.postgres.existingSecret -}}
{{- .Values.postgres.existingSecretKey -}}
{{- else -}}
DATABASE_URL
{{- end -}}
{{- end -}}

{{/* A value kept across upgrades: the live Secret's key if present, else the given
     value, else a fresh random one. (dict "ctx" $ "secret" name "key" k "value" v) */}}
{{- define "runstream.keptSecret" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if .value -}}
{{- .value -}}
{{- else if and $live $live.data (hasKey $live.data .key) -}}
{{- index $live.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}

{{/* Pod-level fields shared by every Runstream service. */}}
{{- define "runstream.podCommon" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* env entries from a map, sorted by name. */}}
{{- define "runstream.envMap" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{- define "runstream.databaseEnv" -}}
- name: RUNSTREAM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "runstream.databaseSecretName" . }}
      key: {{ include "runstream.databaseSecretKey" . }}
{{- end -}}

{{/* Probes on the Prometheus side port (projector, workers: no HTTP API of their own). */}}
{{- define "runstream.metricsProbes" -}}
startupProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 2
  failureThreshold: 60
readinessProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
livenessProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* A resource quantity times a count, unit kept: 200m x 3 = 600m, 0.5 x 3 = 1.5,
     256Mi x 3 = 768Mi. (dict "quantity" q "times" n) */}}
{{- define "runstream.scaleQuantity" -}}
{{- $q := toString .quantity -}}
{{- $num := regexFind "^[0-9]+([.][0-9]+)?" $q -}}
{{- if not $num }}{{ fail (printf "cannot scale the resource quantity %q" $q) }}{{ end -}}
{{- $scaled := mulf (float64 $num) .times -}}
{{- if eq (float64 (int64 $scaled)) $scaled }}{{ int64 $scaled }}{{ else }}{{ $scaled }}{{ end -}}
{{- trimPrefix $num $q -}}
{{- end -}}

{{/* Requests and limits given per process, for a pod running `times` of them. */}}
{{- define "runstream.scaledResources" -}}
{{- $out := dict -}}
{{- range $kind, $amounts := .resources }}
{{- $scaled := dict -}}
{{- range $name, $q := $amounts }}
{{- $_ := set $scaled $name (include "runstream.scaleQuantity" (dict "quantity" $q "times" $.times)) -}}
{{- end }}
{{- $_ := set $out $kind $scaled -}}
{{- end }}
{{- toYaml $out -}}
{{- end -}}
