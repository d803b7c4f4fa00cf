{{/*
A worker: metrics Service, Deployment (probes on the metrics side port), HPA, PDB.
Workers speak only NATS: no database URL, no JWT secret.
Call with (dict "ctx" $ "component" "execution-worker" "service" "execution_worker"
               "values" .Values.executionWorker "env" (list ...extra env entries...)).
*/}}
{{- define "runstream.worker" -}}
{{- $ := .ctx }}
{{- $w := .values }}
{{- $component := .component }}
{{- $name := printf "%s-%s" (include "runstream.fullname" $) $component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "runstream.labels" (dict "ctx" $ "component" $component) | nindent 4 }}
spec:
  selector:
    {{- include "runstream.selectorLabels" (dict "ctx" $ "component" $component) | nindent 4 }}
  ports:
    - {name: metrics, port: {{ $.Values.metricsPort }}, targetPort: metrics}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "runstream.labels" (dict "ctx" $ "component" $component) | nindent 4 }}
spec:
  {{- if not $w.autoscaling.enabled }}
  replicas: {{ $w.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "runstream.selectorLabels" (dict "ctx" $ "component" $component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "runstream.labels" (dict "ctx" $ "component" $component) | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
    spec:
      {{- include "runstream.podCommon" (dict "ctx" $ "values" $w) | nindent 6 }}
      # In-flight deliveries are nak'ed or redelivered after ack_wait; give a running
      # step time to finish on SIGTERM.
      terminationGracePeriodSeconds: 60
      containers:
        - name: {{ $component }}
          image: {{ include "runstream.image" (dict "ctx" $ "service" .service) }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ include "runstream.fullname" $ }}-config
          env:
            - name: RUNSTREAM_METRICS_PORT
              value: {{ $.Values.metricsPort | toString | quote }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- include "runstream.envMap" $w.env | indent 12 }}
          ports:
            - {name: metrics, containerPort: {{ $.Values.metricsPort }}}
          {{- include "runstream.metricsProbes" $ | nindent 10 }}
          resources:
            {{- toYaml $w.resources | nindent 12 }}
          securityContext:
            {{- toYaml $.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {}
{{- if $w.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "runstream.labels" (dict "ctx" $ "component" $component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $w.autoscaling.minReplicas }}
  maxReplicas: {{ $w.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $w.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- if $w.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "runstream.labels" (dict "ctx" $ "component" $component) | nindent 4 }}
spec:
  maxUnavailable: {{ $w.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "runstream.selectorLabels" (dict "ctx" $ "component" $component) | nindent 6 }}
{{- end }}
{{- end -}}
