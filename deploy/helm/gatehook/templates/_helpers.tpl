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

{{/* NATS TLS and credentials files: env and mounts (``files`` names the .creds Secret). */}}
{{- define "gatehook.natsFilesEnv" -}}
{{- if .root.Values.nats.tlsSecret }}
- {name: GATEHOOK_NATS__TLS_CA_FILE, value: /etc/gatehook/nats-tls/ca.crt}
- {name: GATEHOOK_NATS__TLS_CERT_FILE, value: /etc/gatehook/nats-tls/tls.crt}
- {name: GATEHOOK_NATS__TLS_KEY_FILE, value: /etc/gatehook/nats-tls/tls.key}
{{- end }}
{{- if .creds }}
- {name: GATEHOOK_NATS__CREDS_FILE, value: /etc/gatehook/nats-creds/user.creds}
{{- end }}
{{- end -}}

{{- define "gatehook.natsFilesMounts" -}}
{{- if .root.Values.nats.tlsSecret }}
- {name: nats-tls, mountPath: /etc/gatehook/nats-tls, readOnly: true}
{{- end }}
{{- if .creds }}
- {name: nats-creds, mountPath: /etc/gatehook/nats-creds, readOnly: true}
{{- end }}
{{- end -}}

{{- define "gatehook.natsFilesVolumes" -}}
{{- if .root.Values.nats.tlsSecret }}
- name: nats-tls
  secret: {secretName: {{ .root.Values.nats.tlsSecret }}, defaultMode: 0400}
{{- end }}
{{- if .creds }}
- name: nats-creds
  secret: {secretName: {{ .creds }}, defaultMode: 0400}
{{- end }}
{{- end -}}
