{{- define "switchyard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchyard.labels" -}}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The gateway's config file: the [server] table from values, then the rest. */}}
{{- define "switchyard.configFile" -}}
{{- if regexMatch "(?m)^\\s*\\[server\\]" .Values.config -}}
{{- fail "config: must not contain a [server] table; the chart writes it (port, shutdown.*, serverExtra)" -}}
{{- end -}}
[server]
listen = "0.0.0.0:{{ .Values.port }}"
drain_delay = "{{ .Values.shutdown.drainDelaySeconds }}s"
drain_timeout = "{{ .Values.shutdown.drainTimeoutSeconds }}s"
{{ .Values.serverExtra }}
{{ .Values.config }}
{{- end -}}

{{/* Refuses a grace period the shutdown sequence does not fit in. */}}
{{- define "switchyard.checkShutdown" -}}
{{- $s := .Values.shutdown -}}
{{- $needed := add $s.preStopSleepSeconds $s.drainDelaySeconds $s.drainTimeoutSeconds 10 -}}
{{- if lt (int $s.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds: %v is too short; preStopSleepSeconds + drainDelaySeconds + drainTimeoutSeconds + 10 s of flush = %v (raise it, or lower the drain times)" $s.terminationGracePeriodSeconds $needed) -}}
{{- end -}}
{{- end -}}
