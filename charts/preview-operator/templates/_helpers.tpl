{{- define "preview-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "preview-operator.serviceAccountName" -}}
{{- default (include "preview-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "preview-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "preview-operator.labels" -}}
{{ include "preview-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- /* The metadata lines the chart adds to every CRD (see crds.yaml). */ -}}
{{- define "preview-operator.crdMetadata" -}}
metadata:
{{- if .Values.crds.keep }}
  annotations:
    # helm uninstall leaves the CRD: deleting it would delete every PreviewEnvironment.
    helm.sh/resource-policy: keep
{{- end }}
  labels:
    {{- include "preview-operator.labels" . | nindent 4 }}
{{ end -}}

{{- /*
resource=quantity pairs for --quota, --default-requests and --default-limits, from a map
(requests.cpu: "4") or, as in chart 0.1.0, from a ready "requests.cpu=4,pods=50" string.
*/ -}}
{{- define "preview-operator.pairs" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- $pairs := list -}}
{{- range $resource, $quantity := . -}}
{{- $pairs = append $pairs (printf "%s=%v" $resource $quantity) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
{{- end -}}
