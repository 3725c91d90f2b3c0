{{/* The chart's name, or nameOverride. */}}
{{- define "tslm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects' base name: the release name, with the chart's
name unless the release name holds it already. */}}
{{- define "tslm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The internal Service's name. Kept under 63 characters with its suffix. */}}
{{- define "tslm.internalName" -}}
{{- printf "%s-internal" (include "tslm.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "tslm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tslm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* What Services, the HPA, the PDB and the NetworkPolicy select the pods by:
fixed for the Deployment's life (a selector cannot change). */}}
{{- define "tslm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tslm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tslm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret the chart makes, when it makes one: for redis.url and
publicAuthTokens.values not taken from a Secret of the user's. */}}
{{- define "tslm.ownRedisURL" -}}
{{- if and .Values.redis.enabled (not .Values.redis.existingSecret) .Values.redis.url }}true{{ end }}
{{- end }}
{{- define "tslm.ownTokens" -}}
{{- if and (not .Values.publicAuthTokens.existingSecret) .Values.publicAuthTokens.values }}true{{ end }}
{{- end }}

{{/* One key = value line of TOML per entry of a map, in key order. JSON's
strings, numbers, booleans and arrays of them are TOML's too. */}}
{{- define "tslm.tomlKeys" -}}
{{- range $key, $value := . }}
{{- if not (regexMatch "^[a-z_]+$" $key) }}
{{- fail (printf "config key %q: keys of a listener table are lower-case words joined by _ (docs/config.md)" $key) }}
{{- end }}
{{- if kindIs "map" $value }}
{{- fail (printf "config key %q: a listener key's value is a string, a number, a boolean or a list of them" $key) }}
{{- end }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{/* The config file. The listeners' ip and port come from listenIP and
ports, which the container's ports, the probes and the Services use too. */}}
{{- define "tslm.configFile" -}}
{{- range $name := list "ip" "port" "auth_tokens" }}
{{- if or (hasKey $.Values.config.public $name) (hasKey $.Values.config.internal $name) }}
{{- fail (printf "config.public/config.internal: %q is the chart's to set (listenIP, ports, publicAuthTokens)" $name) }}
{{- end }}
{{- end -}}
# The gateway's config file (TSLM_CONFIG), written by the Helm chart
# {{ .Chart.Name }}-{{ .Chart.Version }}; docs/config.md has every key.
# TSLM_* variables set on the container override it.

[listener.public]
ip = {{ toJson .Values.listenIP }}
port = {{ int .Values.ports.public }}
{{- include "tslm.tomlKeys" .Values.config.public }}

[listener.internal]
ip = {{ toJson .Values.listenIP }}
port = {{ int .Values.ports.internal }}
{{- include "tslm.tomlKeys" .Values.config.internal }}
{{- with .Values.trustedProxies }}

[auth]
trusted_proxies = {{ toJson . }}
{{- end }}
{{- with .Values.oidc }}
{{- if .issuer }}

[auth.oidc]
issuer = {{ toJson .issuer }}
{{- with .audience }}
audience = {{ toJson . }}
{{- end }}
{{- with .grantsClaim }}
grants_claim = {{ toJson . }}
{{- end }}
{{- with .refresh }}
refresh = {{ toJson . }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.config.extra }}

{{ . | trimSuffix "\n" }}
{{- end }}
{{- end }}

{{/* The settings the chart checks before rendering anything: mistakes that
would otherwise show only as a pod that never gets ready. */}}
{{- define "tslm.validate" -}}
{{- if eq (int .Values.ports.public) (int .Values.ports.internal) }}
{{- fail "ports.public and ports.internal must differ: the two listeners cannot share a port" }}
{{- end }}
{{- if or (hasPrefix "127." .Values.listenIP) (eq .Values.listenIP "::1") }}
{{- fail "listenIP: a loopback address is unreachable from kubelet's probes and the Services; use 0.0.0.0 or ::" }}
{{- end }}
{{- if not .Values.redis.enabled }}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "redis.enabled=false keeps channels in each pod's memory: replicas would not share them; set replicaCount=1 and autoscaling.enabled=false, or give Redis" }}
{{- end }}
{{- else if not (or .Values.redis.existingSecret .Values.redis.url) }}
{{- fail "redis.enabled=true needs redis.url or redis.existingSecret" }}
{{- end }}
{{- if lt (int .Values.drain.shutdownGraceSeconds) 1 }}
{{- fail "drain.shutdownGraceSeconds must be at least 1 (TSLM_SHUTDOWN_GRACE)" }}
{{- end }}
{{- if or (lt (int .Values.drain.preStopSleepSeconds) 0) (lt (int .Values.drain.delaySeconds) 0) (lt (int .Values.drain.extraGraceSeconds) 0) }}
{{- fail "drain: seconds are never negative" }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if .Values.redis.enabled }}
{{- if not (and .Values.networkPolicy.egress.redis.to .Values.networkPolicy.egress.redis.ports) }}
{{- fail "networkPolicy.egress.redis needs ports and to: without to, the policy would let the pods reach those ports anywhere" }}
{{- end }}
{{- end }}
{{- if .Values.oidc.issuer }}
{{- if not (and .Values.networkPolicy.egress.identityProvider.to .Values.networkPolicy.egress.identityProvider.ports) }}
{{- fail "networkPolicy.egress.identityProvider needs ports and to when oidc.issuer is set" }}
{{- end }}
{{- end }}
{{- if not (and .Values.networkPolicy.egress.dns.to .Values.networkPolicy.egress.dns.ports) }}
{{- fail "networkPolicy.egress.dns needs ports and to: the gateway resolves Redis's and the provider's names" }}
{{- end }}
{{- if not .Values.networkPolicy.ingress.internal.from }}
{{- fail "networkPolicy.ingress.internal.from is empty: name the pods (publishers, serving apps, Prometheus) allowed to the internal listener" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod's whole termination budget: see drain in values.yaml. */}}
{{- define "tslm.terminationGrace" -}}
{{- add .Values.drain.preStopSleepSeconds .Values.drain.delaySeconds .Values.drain.shutdownGraceSeconds .Values.drain.extraGraceSeconds }}
{{- end }}

{{/* The probes' scheme: HTTPS when the internal listener serves TLS. */}}
{{- define "tslm.probeScheme" -}}
{{- if hasKey .Values.config.internal "tls_cert" }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
