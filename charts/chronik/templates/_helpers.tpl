{{/* Labels every object of the release carries. */}}
{{- define "chronik.labels" -}}
app.kubernetes.io/part-of: chronik
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The internal bootstrap address of the chart's cluster. */}}
{{- define "chronik.bootstrap" -}}
{{ .Values.cluster.name }}.{{ .Release.Namespace }}.svc:9092
{{- end }}
