{{/* Names and labels shared by the chart's objects. */}}
{{- define "gatehook.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatehook.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "gatehook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gatehook.selector" -}}
app.kubernetes.io/name: {{ include "gatehook.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gatehook.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gatehook.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-connections" (include "gatehook.fullname" .)) -}}
{{- end -}}

{{/* The settings both the worker and the console read from the Secret. */}}
{{- define "gatehook.connectionEnv" -}}
- name: GATEHOOK_MONGODB_URL
  valueFrom:
    secretKeyRef: {name: {{ include "gatehook.secretName" . }}, key: {{ .Values.secretKeys.mongodbUrl }}}
- name: GATEHOOK_MONGODB_DATABASE
  value: {{ .Values.mongodb.database | quote }}
{{- end -}}
