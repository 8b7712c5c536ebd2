{{/* The operator's name, used for its Deployment, ServiceAccount, RBAC and Lease. */}}
{{- define "px.operatorName" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "px.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: px
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator's pods (never change them: selectors are immutable). */}}
{{- define "px.selectorLabels" -}}
app.kubernetes.io/name: px-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the operator's Deployment and pods: px.labels plus its name. */}}
{{- define "px.operatorLabels" -}}
{{ include "px.labels" . }}
app.kubernetes.io/name: px-operator
{{- end -}}

{{/* The operator image, with the chart's appVersion as the default tag. */}}
{{- define "px.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Lease the operator's replicas elect a leader with (in the release's namespace). */}}
{{- define "px.leaseName" -}}
{{- include "px.operatorName" . -}}
{{- end -}}
