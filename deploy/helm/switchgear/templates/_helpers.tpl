{{/* The release's full name: the release name, with the chart's unless it holds it already. */}}
{{- define "switchgear.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchgear.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchgear.labels" -}}
{{ include "switchgear.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "switchgear.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchgear.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The redis:// URL of `redis`, or nothing when no host is set. */}}
{{- define "switchgear.redisURL" -}}
{{- with .Values.redis -}}
{{- if .host -}}
{{- printf "%s://%s:%v/%v" (ternary "rediss" "redis" .tls) .host .port .database -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The gateway's config: `config` with the store and Redis URLs the chart's values give. */}}
{{- define "switchgear.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- with .Values.postgresql -}}
{{- if .host -}}
{{- $store := deepCopy (default dict $config.store) -}}
{{- $url := printf "postgresql://%s@%s:%v/%s" .user .host .port .database -}}
{{- $_ := set $store "url" (ternary (printf "%s?%s" $url .options) $url (ne .options "")) -}}
{{- $_ := set $config "store" $store -}}
{{- end -}}
{{- end -}}
{{- $redis := include "switchgear.redisURL" . -}}
{{- if $redis -}}
{{- $limits := deepCopy (default dict $config.limits) -}}
{{- $_ := set $limits "state_url" $redis -}}
{{- $_ := set $config "limits" $limits -}}
{{- if .Values.redis.cache -}}
{{- $cache := deepCopy (default dict $config.cache) -}}
{{- $_ := set $cache "url" $redis -}}
{{- $_ := set $config "cache" $cache -}}
{{- end -}}
{{- end -}}
{{- $urls := dict "store.url" (dig "store" "url" "" $config) "limits.state_url" (dig "limits" "state_url" "" $config) "cache.url" (dig "cache" "url" "" $config) -}}
{{- range $setting, $url := $urls -}}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" (default "" $url) -}}
{{- fail (printf "a password in config.%s: name a Secret instead (postgresql.passwordSecret; see values.yaml)" $setting) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* A server setting of `config` with the gateway's default when it is not given. */}}
{{- define "switchgear.serverSetting" -}}
{{- $server := default dict .root.Values.config.server -}}
{{- if hasKey $server .name -}}{{ get $server .name }}{{- else -}}{{ .default }}{{- end -}}
{{- end -}}

{{/* Seconds from the pod's deletion to SIGKILL: the preStop sleep, the drain grace, the
     shutdown timeout and a margin, rounded up. */}}
{{- define "switchgear.terminationGracePeriodSeconds" -}}
{{- $grace := include "switchgear.serverSetting" (dict "root" . "name" "drain_grace_s" "default" 5) | float64 -}}
{{- $shutdown := include "switchgear.serverSetting" (dict "root" . "name" "shutdown_timeout_s" "default" 30) | float64 -}}
{{- $total := addf .Values.drain.preStopSleepSeconds $grace $shutdown .Values.drain.marginSeconds -}}
{{- ceil $total | int -}}
{{- end -}}

{{/* The SLO rule groups: prometheusRule.rules when given, else files/slo-rules.yaml, which
     must have been written for this config.slo (files/slo-rules.sha256 records which). */}}
{{- define "switchgear.sloRules" -}}
{{- if .Values.prometheusRule.rules -}}
{{- .Values.prometheusRule.rules -}}
{{- else -}}
{{- $wanted := include "switchgear.sloFingerprint" . -}}
{{- $shipped := .Files.Get "files/slo-rules.sha256" | trim -}}
{{- if ne $wanted $shipped -}}
{{- fail (printf "config.slo is not the one files/slo-rules.yaml was written for (sha256 %s, shipped %s): run `switchgear slo rules --config YOUR-CONFIG -o slo-rules.yaml` and pass --set-file prometheusRule.rules=slo-rules.yaml" $wanted $shipped) -}}
{{- end -}}
{{- .Files.Get "files/slo-rules.yaml" -}}
{{- end -}}
{{- end -}}

{{- define "switchgear.sloFingerprint" -}}
{{- default dict .Values.config.slo | toJson | sha256sum -}}
{{- end -}}
