{{- define "offpeak.labels" -}}
app.kubernetes.io/name: offpeak
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "offpeak.selector" -}}
app.kubernetes.io/name: offpeak
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
