{{/* Full name: the release name when it already starts with underpass-connector, else underpass-connector-<release>. */}}
{{- define "underpass-connector.fullname" -}}
{{- if hasPrefix "underpass-connector" .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "underpass-connector-%s" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The connector's name: config.name, else the release name without "underpass-connector-". */}}
{{- define "underpass-connector.name" -}}
{{- .Values.config.name | default (trimPrefix "underpass-connector-" .Release.Name) -}}
{{- end -}}

{{/* The Secret: secret.name, else underpass-connector-<name> (what `connector bundle --secret` names it). */}}
{{- define "underpass-connector.secretName" -}}
{{- .Values.secret.name | default (printf "underpass-connector-%s" (include "underpass-connector.name" .)) -}}
{{- end -}}

{{- define "underpass-connector.selectorLabels" -}}
app.kubernetes.io/name: underpass-connector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "underpass-connector.labels" -}}
{{ include "underpass-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: underpass
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "underpass-connector.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* connector.yaml as the chart writes it (secret.create without secret.config). */}}
{{- define "underpass-connector.config" -}}
# Connector {{ include "underpass-connector.name" . }}, written by the underpass-connector chart (release {{ .Release.Name }}).
name: {{ include "underpass-connector.name" . | quote }}
worker:
{{- range .Values.config.workers }}
  - {{ . | quote }}
{{- end }}
tls:
  cert: /etc/underpass/tls.crt
  key: /etc/underpass/tls.key
  ca: /etc/underpass/ca.crt
admin: {{ printf ":%d" (int .Values.adminPort) | quote }}
{{- /* Connectors deny by default: the lists are always written (an empty one denies everything). */}}
{{- if .Values.config.allow }}
allow:
{{- range .Values.config.allow }}
  - {{ . | quote }}
{{- end }}
{{- else }}
allow: []
{{- end }}
{{- if .Values.config.allowAll }}
allowAll: true
{{- end }}
{{- /* Each listener in .Values.listeners is bound on every interface of the pod (the Service reaches it there). */}}
{{- $bind := list }}
{{- range .Values.listeners }}{{ $bind = append $bind (printf "0.0.0.0:%d" (int .port)) }}{{ end }}
{{- $bind = concat $bind .Values.config.bind | uniq }}
{{- if $bind }}
bind:
{{- range $bind }}
  - {{ . | quote }}
{{- end }}
{{- else }}
bind: []
{{- end }}
log:
  level: {{ .Values.config.logLevel }}
{{- end -}}

{{/* An egress or ingress peer list from {cidr} or {namespace, podLabels}. */}}
{{- define "underpass-connector.peers" -}}
{{- if .cidr -}}
- ipBlock:
    cidr: {{ .cidr }}
{{- else -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "underpass-connector.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "underpass-connector.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}


{{/* Enrollment with a one-time token: enrollment.token or enrollment.existingTokenSecret is set. */}}
{{- define "underpass-connector.enrolling" -}}
{{- if or .Values.enrollment.token .Values.enrollment.existingTokenSecret -}}true{{- end -}}
{{- end -}}

{{/* connector.yaml when enrolling: state in an emptyDir, kept in the Secret <fullname>-state. */}}
{{- define "underpass-connector.enrollConfig" -}}
{{- $config := include "underpass-connector.config" . -}}
{{- $config = replace "tls:\n  cert: /etc/underpass/tls.crt\n  key: /etc/underpass/tls.key\n  ca: /etc/underpass/ca.crt\n" "" $config -}}
{{ $config }}
# Enrolled with a one-time token: the key is made in the pod; key, certificate and CA are kept in the
# Secret below (only this pod's Role may read and update it), so a restart does not enroll again.
state: /var/lib/underpass/state
stateSecret:
  name: {{ printf "%s-state" (include "underpass-connector.fullname" .) | quote }}
enroll:
  tokenFile: /etc/underpass-token/token
{{- end -}}
