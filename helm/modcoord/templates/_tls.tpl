{{/*
TLS material (values: tls). One certificate per role (coordinator, worker,
user, etcd, nats), shared by every pod of that role, named
<role>-<name> as pki.FilesFor names files, <name> being tls.certName or the
fullname. The CommonName is the role itself (sprig cannot write the URI
SAN that pki.Issue adds; pki reads the role from the CommonName then, and
etcd takes it as the user name). Each pod sees its own
role's certificate and the CA certificate, read-only, in /etc/modcoord/tls:

  /etc/modcoord/tls/ca.crt
  /etc/modcoord/tls/<role>-<name>.crt
  /etc/modcoord/tls/<role>-<name>.key

The CA key is never mounted: the chart keeps it in a Secret of its own
(<fullname>-tls-ca) that no pod references.
*/}}

{{- define "modcoord.tlsName" -}}
{{- .Values.tls.certName | default (include "modcoord.fullname" .) }}
{{- end }}

{{/* The directory every pod finds its TLS files in. */}}
{{- define "modcoord.tlsDir" -}}
/etc/modcoord/tls
{{- end }}

{{/* The Secret with ca.crt and every role's certificate and key: the user's, or the chart's. */}}
{{- define "modcoord.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "modcoord.fullname" .)) }}
{{- end }}

{{/* The chart's CA (ca.crt, ca.key), kept for upgrades; never mounted. */}}
{{- define "modcoord.tlsCASecretName" -}}
{{- printf "%s-tls-ca" (include "modcoord.fullname" .) }}
{{- end }}

{{/* cert-manager: one Certificate and Secret per role. Call with (dict "ctx" $ "role" ROLE). */}}
{{- define "modcoord.tlsRoleSecretName" -}}
{{- printf "%s-tls-%s" (include "modcoord.fullname" .ctx) .role }}
{{- end }}

{{/*
The DNS names a role's certificate is valid for, as a JSON list: the
Services clients dial (short, namespaced and fully qualified), every pod
under the headless Service, a wildcard under it (so a certificate kept
across upgrades still covers added replicas) and localhost. Workers and
users are clients only and get none. Call with (dict "ctx" $ "role" ROLE).
*/}}
{{- define "modcoord.tlsDNSNames" -}}
{{- $ctx := .ctx }}
{{- $full := include "modcoord.fullname" $ctx }}
{{- $ns := $ctx.Release.Namespace }}
{{- $domain := $ctx.Values.clusterDomain }}
{{- $services := list }}
{{- $headless := "" }}
{{- $pods := list }}
{{- if eq .role "coordinator" }}
{{- $services = list $full }}
{{- $headless = include "modcoord.coordinatorHeadless" $ctx }}
{{- range $i := until (int $ctx.Values.coordinator.replicas) }}
{{- $pods = append $pods (printf "%s-coordinator-%d" $full $i) }}
{{- end }}
{{- else if eq .role "etcd" }}
{{- $services = list (printf "%s-etcd" $full) }}
{{- $headless = printf "%s-etcd-headless" $full }}
{{- range $i := until (int $ctx.Values.etcd.replicas) }}
{{- $pods = append $pods (printf "%s-etcd-%d" $full $i) }}
{{- end }}
{{- else if eq .role "nats" }}
{{- $services = list (printf "%s-nats" $full) (printf "%s-nats-local" $full) }}
{{- $headless = printf "%s-nats-headless" $full }}
{{- if ne $ctx.Values.nats.topology "daemonset" }}
{{- range $i := until (int $ctx.Values.nats.replicas) }}
{{- $pods = append $pods (printf "%s-nats-%d" $full $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- $names := list }}
{{- if $headless }}
{{- $services = append $services $headless }}
{{- end }}
{{- range $s := $services }}
{{- $names = append $names $s }}
{{- $names = append $names (printf "%s.%s" $s $ns) }}
{{- $names = append $names (printf "%s.%s.svc" $s $ns) }}
{{- $names = append $names (printf "%s.%s.svc.%s" $s $ns $domain) }}
{{- end }}
{{- if $headless }}
{{- range $p := $pods }}
{{- $names = append $names (printf "%s.%s.%s.svc" $p $headless $ns) }}
{{- $names = append $names (printf "%s.%s.%s.svc.%s" $p $headless $ns $domain) }}
{{- end }}
{{- $names = append $names (printf "*.%s.%s.svc" $headless $ns) }}
{{- $names = append $names (printf "*.%s.%s.svc.%s" $headless $ns $domain) }}
{{- $names = append $names "localhost" }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Loopback addresses, for the server roles only (a JSON list). */}}
{{- define "modcoord.tlsIPs" -}}
{{- if has .role (list "coordinator" "etcd" "nats") }}
{{- toJson (list "127.0.0.1" "::1") }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/*
A projected-volume source with one role's TLS files: ca.crt and the
role's <role>-<name>.crt/.key, under the directory prefix dir ("" or
"tls/"), and nothing else of the Secret (an existing Secret may hold
ca.key; it is never projected). Call with (dict "ctx" $ "role" ROLE "dir" PREFIX).
*/}}
{{- define "modcoord.tlsProjection" -}}
{{- $base := printf "%s-%s" .role (include "modcoord.tlsName" .ctx) -}}
- secret:
    {{- if .ctx.Values.tls.certManager.enabled }}
    name: {{ include "modcoord.tlsRoleSecretName" (dict "ctx" .ctx "role" .role) }}
    items:
      - key: ca.crt
        path: {{ .dir }}ca.crt
      - key: tls.crt
        path: {{ .dir }}{{ $base }}.crt
      - key: tls.key
        path: {{ .dir }}{{ $base }}.key
    {{- else }}
    name: {{ include "modcoord.tlsSecretName" .ctx }}
    items:
      - key: ca.crt
        path: {{ .dir }}ca.crt
      - key: {{ $base }}.crt
        path: {{ .dir }}{{ $base }}.crt
      - key: {{ $base }}.key
        path: {{ .dir }}{{ $base }}.key
    {{- end }}
{{- end }}

{{/* The TLS volume of a pod whose other secrets are not projected (etcd, NATS). Call with (dict "ctx" $ "role" ROLE). */}}
{{- define "modcoord.tlsVolume" -}}
- name: tls
  projected:
    # Readable by the pod's fsGroup only.
    defaultMode: 0440
    sources:
      {{- include "modcoord.tlsProjection" (dict "ctx" .ctx "role" .role "dir" "") | nindent 6 }}
{{- end }}

{{- define "modcoord.tlsVolumeMount" -}}
- name: tls
  mountPath: {{ include "modcoord.tlsDir" . }}
  readOnly: true
{{- end }}

{{/* Checks of the tls values; included once, by tls.yaml. */}}
{{- define "modcoord.tlsValidate" -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret }}
{{- fail "tls.certManager.enabled and tls.existingSecret both choose where the certificates come from; set one" }}
{{- end }}
{{- if .Values.tls.certManager.enabled }}
{{- $_ := required "tls.certManager.issuerRef.name is required when tls.certManager.enabled is true (an Issuer for this cluster's CA only)" .Values.tls.certManager.issuerRef.name }}
{{- end }}
{{- end }}
