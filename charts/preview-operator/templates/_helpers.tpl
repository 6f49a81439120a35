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
A duration of the operator's format (72h, 7d, 1h30m) in seconds, for comparisons.
*/ -}}
{{- define "preview-operator.seconds" -}}
{{- $total := 0 -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 -}}
{{- range regexFindAll "[0-9]+[smhd]" . -1 -}}
{{- $total = add $total (mul (atoi (trimAll "smhd" .)) (get $units (regexReplaceAll "[0-9]" . ""))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- /* resource: quantity pairs as a map of strings, without the keys set to null. */ -}}
{{- define "preview-operator.quantities" -}}
{{- $out := dict -}}
{{- range $resource, $quantity := . -}}
{{- if not (kindIs "invalid" $quantity) -}}
{{- $_ := set $out $resource (toString $quantity) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- /*
Values of chart 0.2.0 and earlier that moved into the default PreviewClass: refused with where
they went, rather than ignored (the operator no longer has those flags). helm upgrade
--reuse-values brings the old chart's defaults along (and no defaultClass), so it names
--reset-then-reuse-values. Included first by every template that reads defaultClass.
*/ -}}
{{- define "preview-operator.removedValues" -}}
{{- $moved := dict
  "policy.defaultTtl" "defaultClass.ttl.default"
  "policy.maxTtl" "defaultClass.ttl.max"
  "policy.maxPreviewsPerNamespace" "defaultClass.limits.activePerNamespace"
  "policy.podSecurityLevel" "defaultClass.namespace.podSecurityLevel"
  "policy.quota" "defaultClass.namespace.quota"
  "policy.defaultRequests" "defaultClass.namespace.limitRange.defaultRequests"
  "policy.defaultLimits" "defaultClass.namespace.limitRange.defaultLimits"
  "ingress.baseDomain" "defaultClass.ingress.baseDomain"
  "ingress.className" "defaultClass.ingress.className"
  "ingress.tlsSecret" "defaultClass.ingress.tlsSecretName"
  "ingress.controllerNamespace" "defaultClass.ingress.controllerNamespace" -}}
{{- $found := list -}}
{{- $drop := list -}}
{{- range $key := keys (.Values.policy | default dict) | sortAlpha -}}
{{- if hasKey $moved (printf "policy.%s" $key) -}}
{{- $found = append $found (printf "policy.%s -> %s" $key (get $moved (printf "policy.%s" $key))) -}}
{{- $drop = append $drop (printf "--set policy.%s=null" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey .Values "ingress" -}}
{{- range $key := keys (.Values.ingress | default dict) | sortAlpha -}}
{{- $found = append $found (printf "ingress.%s -> %s" $key (get $moved (printf "ingress.%s" $key) | default "defaultClass.ingress")) -}}
{{- $drop = append $drop (printf "--set ingress.%s=null" $key) -}}
{{- end -}}
{{- if not $found -}}
{{- $found = append $found "ingress -> defaultClass.ingress" -}}
{{- $drop = append $drop "--set ingress=null" -}}
{{- end -}}
{{- end -}}
{{- if $found -}}
{{- fail (printf "tenant policy moved from the chart's values into the default PreviewClass (defaultClass) in chart 0.3.0: %s. Set the new keys and drop the old ones (%s, or pass all your values with --reset-values -f FILE). helm upgrade --reuse-values brings an older chart's defaults along: use --reset-then-reuse-values (Helm 3.14+)." (join ", " $found) (join " " $drop)) -}}
{{- end -}}
{{- if not (kindIs "map" .Values.defaultClass) -}}
{{- fail "defaultClass is missing from the values. helm upgrade --reuse-values from a chart without it (0.2.0 and earlier) keeps that chart's defaults: upgrade with --reset-then-reuse-values (Helm 3.14+), or pass the new values.yaml's defaultClass block" -}}
{{- end -}}
{{- /* Blocks chart 0.6.0 added: --reuse-values from 0.5.0 and earlier lacks them. */ -}}
{{- $missing := list -}}
{{- if not (kindIs "map" (.Values.github | default dict).app) -}}
{{- $missing = append $missing "github.app" -}}
{{- end -}}
{{- range $block := list "gitlab" "testLogs" -}}
{{- if not (kindIs "map" (get $.Values $block)) -}}
{{- $missing = append $missing $block -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "%s missing from the values. helm upgrade --reuse-values from a chart without them (0.5.0 and earlier) keeps that chart's defaults: upgrade with --reset-then-reuse-values (Helm 3.14+), or pass the new values.yaml's blocks" (join ", " $missing)) -}}
{{- end -}}
{{- end -}}

{{- /*
The GitHub App and GitLab values that only work together: refused with what is missing rather
than an operator that refuses to start (--github-app-id requires its key file) or a setting
that does nothing.
*/ -}}
{{- define "preview-operator.scmValues" -}}
{{- $app := .Values.github.app -}}
{{- if and $app.id (not $app.privateKey.existingSecret) -}}
{{- fail "github.app.id is set without github.app.privateKey.existingSecret: a GitHub App needs its private key (a Secret you create, holding the PEM under github.app.privateKey.key)" -}}
{{- end -}}
{{- if and $app.privateKey.existingSecret (not $app.id) -}}
{{- fail "github.app.privateKey.existingSecret is set without github.app.id: a GitHub App needs its id (a number, on the App's settings page)" -}}
{{- end -}}
{{- if and .Values.gitlab.mrNotes (not .Values.gitlab.token.existingSecret) -}}
{{- fail "gitlab.mrNotes needs gitlab.token.existingSecret: notes are written with the GitLab token" -}}
{{- end -}}
{{- if and .Values.gitlab.environments (not .Values.gitlab.token.existingSecret) -}}
{{- fail "gitlab.environments needs gitlab.token.existingSecret: environments are written with the GitLab token" -}}
{{- end -}}
{{- if and .Values.gitlab.webhook.ingress.enabled (not .Values.gitlab.webhook.existingSecret) -}}
{{- fail "gitlab.webhook.ingress.enabled needs gitlab.webhook.existingSecret: without a webhook secret the operator does not serve /webhooks/gitlab" -}}
{{- end -}}
{{- end -}}

{{- /*
The flux block (Flux delivery) came after chart 0.6.0: helm upgrade --reuse-values from 0.6.0 or
earlier lacks it. Included first by every template that reads it.
*/ -}}
{{- define "preview-operator.fluxValues" -}}
{{- if not (kindIs "map" .Values.flux) -}}
{{- fail "flux is missing from the values. helm upgrade --reuse-values from a chart without it (0.6.0 and earlier) keeps that chart's defaults: upgrade with --reset-then-reuse-values (Helm 3.14+), or pass the new values.yaml's flux block (enabled: true lets previews deliver their own Helm charts and kustomizations through Flux; see \"Flux delivery\" in the chart README)" -}}
{{- end -}}
{{- end -}}
