{{/* Full name: the release name when it already says underpass-operator, else <release>-underpass-operator. */}}
{{- define "underpass-operator.fullname" -}}
{{- if contains "underpass-operator" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-underpass-operator" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "underpass-operator.selectorLabels" -}}
app.kubernetes.io/name: underpass-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "underpass-operator.labels" -}}
{{ include "underpass-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: underpass
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "underpass-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "underpass-operator.fullname" .) -}}
{{- end -}}

{{/* The image, by digest when one is given, else by tag (default: the chart's appVersion). */}}
{{- define "underpass-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The report Service's in-cluster URL: what workers dial (and the operator's certificate names). */}}
{{- define "underpass-operator.reportUrl" -}}
{{- printf "https://%s.%s.svc:%d" (include "underpass-operator.fullname" .) .Release.Namespace (int .Values.ports.report) -}}
{{- end -}}

{{/* Security context every container of this chart runs with (Pod Security Standard "restricted"). */}}
{{- define "underpass-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "underpass-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The spec.worker fields the operator honours besides image (--worker-overrides). */}}
{{- define "underpass-operator.workerOverrides" -}}
{{- $fields := list -}}
{{- range $f := list "resources" "nodeSelector" "tolerations" -}}
{{- if index $.Values.workerOverrides $f -}}{{- $fields = append $fields $f -}}{{- end -}}
{{- end -}}
{{- $fields | join "," | default "none" -}}
{{- end -}}
