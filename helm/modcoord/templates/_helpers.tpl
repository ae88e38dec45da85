{{/*
Names. Object names are "<fullname>-<component>"; fullname is cut to 40
characters so that the longest derived name (a StatefulSet pod's
controller-revision-hash label "<fullname>-coordinator-<hash>") stays within
the 63-character label limit.
*/}}
{{- define "modcoord.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "modcoord.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modcoord.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels for every object. Call with (dict "ctx" $ "component" "worker").
*/}}
{{- define "modcoord.labels" -}}
helm.sh/chart: {{ include "modcoord.chart" .ctx }}
{{ include "modcoord.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: modcoord
{{- end }}

{{/*
Selector labels: immutable once a StatefulSet exists, so they never include
the version or chart labels.
*/}}
{{- define "modcoord.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modcoord.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "modcoord.clusterName" -}}
{{- .Values.clusterName | default .Release.Name }}
{{- end }}

{{- define "modcoord.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "modcoord.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- include "modcoord.fullname" . }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* The Secret holding the bundled NATS servers' route password: the user's, or the chart's. */}}
{{- define "modcoord.natsSecretName" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats" (include "modcoord.fullname" .)) }}
{{- end }}

{{/*
A secret value that survives upgrades: the value given in values, else the
value already stored in the release's Secret (lookup; empty under
`helm template`), else a fresh random one. Call it once per key, inside the
Secret's own template, so one render never produces two different values.
Call with (dict "ctx" $ "secret" NAME "key" KEY "given" VALUE "length" N).
*/}}
{{- define "modcoord.persistentSecretValue" -}}
{{- if .given }}
{{- .given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Headless Service names (stable pod DNS for raft, NATS routes, etcd peers). */}}
{{- define "modcoord.coordinatorHeadless" -}}
{{- printf "%s-coordinator-headless" (include "modcoord.fullname" .) }}
{{- end }}

{{/*
The raft peer list for --peers: id=raftHost:7000=https://apiHost:7070 for
every replica, ids being the pod names (which the coordinator also reads
from $POD_NAME) and hosts the pods' stable DNS names under the headless
Service. Generated from the replica count so scaling is one value.
*/}}
{{- define "modcoord.coordinatorPeers" -}}
{{- $full := include "modcoord.fullname" . }}
{{- $domain := printf "%s.%s.svc.%s" (include "modcoord.coordinatorHeadless" .) .Release.Namespace .Values.clusterDomain }}
{{- $peers := list }}
{{- range $i := until (int .Values.coordinator.replicas) }}
{{- $pod := printf "%s-coordinator-%d" $full $i }}
{{- $peers = append $peers (printf "%s=%s.%s:7000=https://%s.%s:7070" $pod $pod $domain $pod $domain) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* Every coordinator's API URL, for workers: followers redirect to the leader. */}}
{{- define "modcoord.coordinatorURLs" -}}
{{- $full := include "modcoord.fullname" . }}
{{- $domain := printf "%s.%s.svc.%s" (include "modcoord.coordinatorHeadless" .) .Release.Namespace .Values.clusterDomain }}
{{- $urls := list }}
{{- range $i := until (int .Values.coordinator.replicas) }}
{{- $urls = append $urls (printf "https://%s-coordinator-%d.%s:7070" $full $i $domain) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The etcd client URL(s) modcoord uses (https: etcd requires client certificates). */}}
{{- define "modcoord.etcdURL" -}}
{{- if .Values.etcd.enabled }}
{{- printf "https://%s-etcd.%s.svc.%s:2379" (include "modcoord.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- required "etcd.url is required when etcd.enabled is false" .Values.etcd.url }}
{{- end }}
{{- end }}

{{/*
The NATS URL the workers use. Per-node topology: the "-local" Service, whose
internalTrafficPolicy Local keeps a worker on its own node's server.
*/}}
{{- define "modcoord.natsURL" -}}
{{- if .Values.nats.enabled }}
{{- $svc := printf "%s-nats" (include "modcoord.fullname" .) }}
{{- if eq .Values.nats.topology "daemonset" }}
{{- $svc = printf "%s-nats-local" (include "modcoord.fullname" .) }}
{{- end }}
{{- printf "nats://%s.%s.svc.%s:4222" $svc .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every workload. Call with the component's
values (dict "ctx" $ "v" .Values.worker).
*/}}
{{- define "modcoord.podCommon" -}}
serviceAccountName: {{ include "modcoord.serviceAccountName" .ctx }}
# No pod of this chart calls the Kubernetes API.
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Affinity: the user's, else a preferred anti-affinity that spreads the
component's pods over nodes (a replicated service on one node is one
failure away from losing quorum). Call with (dict "ctx" $ "v" VALUES "component" NAME).
*/}}
{{- define "modcoord.affinity" -}}
{{- if .v.affinity -}}
affinity:
  {{- toYaml .v.affinity | nindent 2 }}
{{- else -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "modcoord.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 14 }}
{{- end }}
{{- end }}

{{/* Downward-API env: the pod's own name, which every component uses as its id. */}}
{{- define "modcoord.podNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* Checks that values.schema.json cannot express. Included once, by secrets.yaml. */}}
{{- define "modcoord.validate" -}}
{{- if eq (mod (int .Values.coordinator.replicas) 2) 0 }}
{{- fail "coordinator.replicas must be odd: an even raft cluster tolerates no more failures than the odd one below it" }}
{{- end }}
{{- if and .Values.etcd.enabled (eq (mod (int .Values.etcd.replicas) 2) 0) }}
{{- fail "etcd.replicas must be odd" }}
{{- end }}
{{- if not .Values.etcd.enabled }}
{{- $_ := required "etcd.url is required when etcd.enabled is false" .Values.etcd.url }}
{{- end }}
{{- if not .Values.nats.enabled }}
{{- $_ := required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- if not .Values.etcd.enabled }}
{{- range $u := splitList "," .Values.etcd.url }}
{{- if not (hasPrefix "https://" (trim $u)) }}
{{- fail (printf "etcd.url: %q is not https://; modcoord reaches etcd only over mutual TLS" (trim $u)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
