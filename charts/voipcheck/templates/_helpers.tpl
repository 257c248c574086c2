{{/* The chart's name, or nameOverride. */}}
{{- define "voipcheck.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or the release name alone when it already contains the chart's name. */}}
{{- define "voipcheck.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voipcheck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voipcheck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "voipcheck.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "voipcheck.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "voipcheck.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voipcheck.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "voipcheck.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does with VoipChecks, their status, Secrets and Events, wherever it watches
(a ClusterRole, or a Role per watched namespace). Least privilege: Secrets are read only, status
and each check's shard label are written with server-side apply (patch), Events are created and
patched (series).
*/}}
{{- define "voipcheck.watchRules" -}}
- apiGroups: [voipcheck.io]
  resources: [voipchecks]
  verbs: [get, list, watch, patch]
- apiGroups: [voipcheck.io]
  resources: [voipchecks/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  {{- if eq .Values.secretAccess "get" }}
  verbs: [get]
  {{- else }}
  verbs: [get, list, watch]
  {{- end }}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* The operator's service account, as the subject of its role bindings. */}}
{{- define "voipcheck.subjects" -}}
- kind: ServiceAccount
  name: {{ include "voipcheck.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
