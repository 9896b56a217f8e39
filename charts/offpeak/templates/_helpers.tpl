{{- /*
Names are fixed, not per release: the operator installs cluster-wide objects under fixed
names (the tenant role, the webhooks), so one Offpeak runs per cluster. A second release
fails at install on the ClusterRole offpeak-operator that the first one owns.
*/ -}}

{{- define "offpeak.labels" -}}
app.kubernetes.io/name: offpeak
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "offpeak.selector" -}}
app.kubernetes.io/name: offpeak
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "offpeak.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- /* The Service the API server calls the webhook through; its name is in the certificate. */ -}}
{{- define "offpeak.webhookService" -}}offpeak-webhook{{- end }}
{{- define "offpeak.webhookHost" -}}
{{- printf "%s.%s.svc" (include "offpeak.webhookService" .) .Release.Namespace -}}
{{- end }}

{{- /* Where the pod mounts the SQLite ledger's volume. */ -}}
{{- define "offpeak.ledgerDir" -}}/var/lib/offpeak{{- end }}

{{- /*
Rules between values that a JSON schema cannot say clearly; each message names the values.
*/ -}}
{{- define "offpeak.validate" -}}
{{- if and (eq .Values.ledger.type "sqlite") (gt (int .Values.replicas) 1) -}}
{{- fail (printf "ledger.type=sqlite keeps the ledger in a file only one replica may write, but replicas=%d: set replicas=1, or ledger.type=postgres with ledger.postgres.existingSecret for several replicas" (int .Values.replicas)) -}}
{{- end -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicas=%d needs leaderElection.enabled=true: without it every replica writes" (int .Values.replicas)) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicas) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable=%d must be below replicas=%d, or no node could ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) -}}
{{- end -}}
{{- end }}

{{- /*
The webhook's CA and serving certificate when Helm makes them (no cert-manager), as JSON
{ca, crt, key}. Made once per render and shared by the Secret, the webhook configurations'
caBundle and the Deployment's checksum. An upgrade keeps the certificate in the cluster
while it is for the same Service and has more than 30 days left; otherwise it makes a new
one (delete the Secret and upgrade to rotate at once).
*/ -}}
{{- define "offpeak.webhookTLS" -}}
{{- if .Values.webhook.certManager.enabled -}}
{{- toJson (dict "certManager" true) -}}
{{- else -}}
{{- if not (hasKey . "offpeakWebhookTLS") -}}
{{- $host := include "offpeak.webhookHost" . -}}
{{- $days := int .Values.webhook.certificateDays -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace "offpeak-webhook-tls" -}}
{{- $annotations := dig "metadata" "annotations" dict $existing -}}
{{- $notAfter := int64 (get $annotations "offpeak.dev/certificate-not-after" | default "0") -}}
{{- $soon := add (now | unixEpoch | int64) (mul 30 86400) -}}
{{- $tls := dict -}}
{{- if and $existing.data (eq (get $annotations "offpeak.dev/certificate-host") $host) (gt $notAfter $soon) -}}
{{- $tls = dict "ca" (index $existing.data "ca.crt" | b64dec) "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) "notAfter" (toString $notAfter) -}}
{{- else -}}
{{- $ca := genCA "offpeak-webhook-ca" $days -}}
{{- $cert := genSignedCert $host nil (list $host (printf "%s.cluster.local" $host)) $days $ca -}}
{{- $tls = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key "notAfter" (toString (add (now | unixEpoch | int64) (mul $days 86400))) -}}
{{- end -}}
{{- $_ := set . "offpeakWebhookTLS" $tls -}}
{{- end -}}
{{- toJson (get . "offpeakWebhookTLS") -}}
{{- end -}}
{{- end }}

{{- /* caBundle of the webhook configurations, or cert-manager's cainjector annotation. */ -}}
{{- define "offpeak.webhookCA" -}}
{{- $tls := include "offpeak.webhookTLS" . | fromJson -}}
{{- if not $tls.certManager -}}
caBundle: {{ $tls.ca | b64enc }}
{{- end -}}
{{- end }}
