#!/usr/bin/env bash
# The Helm chart's checks, run by hack/test.sh against the rig (KUBECONFIG must point at it):
# lint, render with default and non-default values, the values schema refusing bad values,
# then install and upgrade. The installed RBAC is what the operator runs as in the cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh
export PATH="$RIG_PATH:$PATH"

chart=charts/preview-operator
release=${PREVIEW_CHART_RELEASE:-preview-operator}
namespace=${PREVIEW_CHART_NAMESPACE:-preview-system}
kube_version=${K8S_VERSION#v}
# helm warns about the CRD symlink on every call; the link is deliberate (one CRD file).
quiet() { "$@" 2> >(grep -v "found symbolic link" >&2); }

log "helm lint"
quiet helm lint --strict "$chart" >/dev/null

log "helm template (default values)"
default=$(quiet helm template "$release" "$chart" -n "$namespace" --kube-version "$kube_version")
for kind in ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service PodDisruptionBudget; do
  grep -q "^kind: $kind$" <<<"$default" || { log "default render lacks a $kind"; exit 1; }
done
if grep -q "^kind: ServiceMonitor$" <<<"$default"; then
  log "ServiceMonitor must be off by default"
  exit 1
fi
if grep -Eq '^\s*-?\s*verbs:.*"\*"|resources:.*"\*"' <<<"$default"; then
  log "RBAC must not use wildcards"
  exit 1
fi

log "helm template (non-default values)"
custom=$(quiet helm template "$release" "$chart" -n "$namespace" --kube-version "$kube_version" \
  -f hack/chart/values-nondefault.yaml)
for want in "kind: ServiceMonitor" "PREVIEW_OPERATOR_INGRESS_BASE_DOMAIN" "preview.example.com" \
  "replicas: 3" "registry.example.com/preview-operator:1.2.3" '"--workers=32"' 'value: "baseline"' \
  "--github-token-file=/etc/preview-operator/github-token/token" "path: /webhooks/github" \
  "--github-webhook-secret-file=/etc/preview-operator/github-webhook/secret" "hooks.example.com"; do
  grep -qF -- "$want" <<<"$custom" || { log "non-default render lacks: $want"; exit 1; }
done

log "values schema refuses bad values"
for bad in "logFormat=xml" "replicaCount=0" "github.apiUrl=ftp://x" "policy.maxTtl=forever" "policy.podSecurityLevel=none" \
  "unknownKey=1" "service.port=70000"; do
  if out=$(quiet helm template "$release" "$chart" --kube-version "$kube_version" --set "$bad" 2>&1); then
    log "the schema accepted --set $bad"
    exit 1
  fi
  grep -q "values don't meet the specifications of the schema\|schema" <<<"$out" ||
    { log "--set $bad failed without naming the schema: $out"; exit 1; }
done

log "helm install onto the rig"
quiet helm install "$release" "$chart" -n "$namespace" --create-namespace \
  --set replicaCount=1 --wait --timeout 2m >/dev/null
kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null

log "helm upgrade onto the rig"
quiet helm upgrade "$release" "$chart" -n "$namespace" --reuse-values \
  --set workers=8 --wait --timeout 2m >/dev/null
kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null
workers=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_WORKERS")].value}')
[[ $workers == 8 ]] || { log "upgrade did not apply workers=8 (got '$workers')"; exit 1; }
log "chart checks passed"
