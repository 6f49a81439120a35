#!/usr/bin/env bash
# The Helm chart's checks, run by hack/test.sh against the rig (KUBECONFIG must point at it):
# lint; render with default and non-default values (CRDs identical to crds/, every mounted
# Secret readable by the operator's user, RBAC without wildcards); the values schema refusing
# bad values; then on the rig: install (which installs the CRDs), uninstall keeping the CRDs
# and the previews, install again, upgrade, and the tenant RBAC aggregated into the built-in
# edit and view roles, checked by impersonation. The chart stays installed: its ServiceAccount
# is what the operator runs as in the cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh
export PATH="$RIG_PATH:$PATH"

chart=charts/preview-operator
release=${PREVIEW_CHART_RELEASE:-preview-operator}
namespace=${PREVIEW_CHART_NAMESPACE:-preview-system}
kube_version=${K8S_VERSION#v}
# helm warns about the CRD link on every call; the link is deliberate (one CRD file).
quiet() { "$@" 2> >(grep -v "found symbolic link" >&2); }
render() { quiet helm template "$release" "$chart" -n "$namespace" --kube-version "$kube_version" "$@"; }
fail() {
  log "$*"
  exit 1
}

# Helm installs a chart's crds/ directory once and never upgrades it: the CRDs are templates.
[[ ! -e $chart/crds ]] || fail "$chart/crds/ must not exist: helm upgrade would never apply its schemas"

log "helm lint"
quiet helm lint --strict "$chart" >/dev/null
quiet helm lint --strict "$chart" -f hack/chart/values-nondefault.yaml >/dev/null

log "helm template (default values)"
default=$(render)
for kind in CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Deployment Service \
  PodDisruptionBudget; do
  grep -q "^kind: $kind$" <<<"$default" || fail "default render lacks a $kind"
done
grep -q "^kind: ServiceMonitor$" <<<"$default" && fail "ServiceMonitor must be off by default"
if grep -Eq '^\s*-?\s*verbs:.*"\*"|resources:.*"\*"' <<<"$default"; then
  fail "RBAC must not use wildcards"
fi
# The CRDs are the generated files, not a copy that can drift, and are kept on uninstall.
hack/chart/crds-match.py crds/*.yaml <<<"$default" >/dev/null
grep -qx "    helm.sh/resource-policy: keep" <<<"$default" || fail "the CRDs lack helm.sh/resource-policy: keep"
for want in 'rbac.authorization.k8s.io/aggregate-to-edit: "true"' 'rbac.authorization.k8s.io/aggregate-to-view: "true"' \
  "name: $release-class-reader"; do
  grep -qF -- "$want" <<<"$default" || fail "default render lacks the tenant RBAC: $want"
done
grep -q 'value: "cpu=50m,memory=64Mi"' <<<"$default" || fail "default render lacks the default requests as cpu=50m,memory=64Mi"
grep -q 'value: "limits.memory=16Gi,pods=50,requests.cpu=4,requests.memory=8Gi"' <<<"$default" ||
  fail "default render lacks the default quota"
# Builds a packaged chart too: the CRD link must be followed into the archive.
package_dir=$(mktemp -d)
quiet helm package "$chart" -d "$package_dir" >/dev/null
quiet helm template "$release" "$package_dir"/preview-operator-*.tgz --kube-version "$kube_version" |
  hack/chart/crds-match.py crds/*.yaml >/dev/null
quiet helm show readme "$package_dir"/preview-operator-*.tgz | grep -q "^## Uninstalling" ||
  fail "helm show readme lacks the uninstall order"
rm -rf "$package_dir"

log "helm template (switches off)"
off=$(render --set crds.install=false --set tenantRbac.enabled=false)
grep -q "^kind: CustomResourceDefinition$" <<<"$off" && fail "crds.install=false still renders a CRD"
grep -q "aggregate-to-" <<<"$off" && fail "tenantRbac.enabled=false still renders aggregated roles"
render --set crds.keep=false | grep -q "helm.sh/resource-policy" && fail "crds.keep=false still keeps the CRDs"

log "helm template (non-default values)"
custom=$(render -f hack/chart/values-nondefault.yaml)
for want in "kind: ServiceMonitor" "PREVIEW_OPERATOR_INGRESS_BASE_DOMAIN" "preview.example.com" \
  "replicas: 3" "registry.example.com/preview-operator:1.2.3" '"--workers=32"' 'value: "baseline"' \
  "--github-token-file=/etc/preview-operator/github-token/token" "path: /webhooks/github" \
  "--github-webhook-secret-file=/etc/preview-operator/github-webhook/secret" "hooks.example.com" \
  'value: "pods=20,requests.cpu=2"' 'value: "cpu=100m,memory=64Mi"' "name: $release-class-reader" "name: platform-team"; do
  grep -qF -- "$want" <<<"$custom" || fail "non-default render lacks: $want"
done

log "every mounted Secret is readable by the operator's user"
hack/chart/secrets-readable.py --self-test
hack/chart/secrets-readable.py <<<"$custom" >/dev/null
hack/chart/secrets-readable.py <<<"$default" >/dev/null

log "quota values: --set with an escaped dot, and the chart 0.1.0 string with escaped commas"
render --set 'policy.quota.requests\.cpu=8' | grep -qF 'PREVIEW_OPERATOR_QUOTA, value: "limits.memory=16Gi,pods=50,requests.cpu=8,' ||
  fail "--set policy.quota.requests\\.cpu=8 did not reach PREVIEW_OPERATOR_QUOTA"
# (Helm warns that a string replaces the default map: expected here.)
render --set 'policy.quota=requests.cpu=8\,pods=9' 2>/dev/null | grep -qF 'PREVIEW_OPERATOR_QUOTA, value: "requests.cpu=8,pods=9"' ||
  fail "--set policy.quota=requests.cpu=8\\,pods=9 did not reach PREVIEW_OPERATOR_QUOTA"

log "values schema refuses bad values"
for bad in "logFormat=xml" "replicaCount=0" "github.apiUrl=ftp://x" "policy.maxTtl=forever" "policy.podSecurityLevel=none" \
  "unknownKey=1" "service.port=70000" "crds.install=maybe" "tenantRbac.enabled=1" "policy.quota=cpu" \
  "policy.quota.cpu=a b" "tenantRbac.classReaderSubjects[0].kind=Robot"; do
  if out=$(render --set "$bad" 2>&1); then
    fail "the schema accepted --set $bad"
  fi
  grep -q "values don't meet the specifications of the schema\|schema" <<<"$out" ||
    fail "--set $bad failed without naming the schema: $out"
done

# The CRDs' names, from the committed files.
mapfile -t crd_names < <(python3 -c '
import sys, yaml
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            print(doc["metadata"]["name"])
' crds/*.yaml)

# A CRD applied with kubectl (hack/dev.sh, or a chart 0.1.0 install, whose crds/ directory
# Helm never owned) is adopted into the release: exactly what README tells users to do.
for crd in "${crd_names[@]}"; do
  kubectl get crd "$crd" >/dev/null 2>&1 || continue
  owner=$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')
  owner_ns=$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-namespace}')
  if [[ -z $owner ]]; then
    log "adopting the existing CRD $crd into release $namespace/$release"
    kubectl annotate crd "$crd" --overwrite "meta.helm.sh/release-name=$release" \
      "meta.helm.sh/release-namespace=$namespace" >/dev/null
    kubectl label crd "$crd" --overwrite app.kubernetes.io/managed-by=Helm >/dev/null
  elif [[ $owner != "$release" || $owner_ns != "$namespace" ]]; then
    fail "CRD $crd belongs to Helm release $owner_ns/$owner, not $namespace/$release"
  fi
done

wait_crds() {
  local crd
  for crd in "${crd_names[@]}"; do
    kubectl wait --for=condition=Established --timeout=60s "crd/$crd" >/dev/null
  done
}

install() {
  quiet helm install "$release" "$chart" -n "$namespace" --create-namespace \
    --set replicaCount=1 --wait --timeout 2m >/dev/null
  kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null
  wait_crds
}

# Test namespaces and the cluster-scoped objects made here, removed on exit.
probe_ns=preview-chart-probe
tenant_ns=preview-chart-tenant
cleanup() {
  kubectl delete clusterrolebinding preview-chart-auditor --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$probe_ns" "$tenant_ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Leftovers of an earlier run on the same rig.
cleanup
kubectl wait --for=delete namespace/"$probe_ns" namespace/"$tenant_ns" --timeout=60s >/dev/null 2>&1 || true
if helm status "$release" -n "$namespace" >/dev/null 2>&1; then
  log "uninstalling the release left by an earlier run"
  quiet helm uninstall "$release" -n "$namespace" --wait --timeout 2m >/dev/null
fi

log "helm install onto the rig (installs the CRDs)"
install

log "helm uninstall keeps the CRDs and the PreviewEnvironments; install again adopts them"
kubectl create namespace "$probe_ns" >/dev/null
# No operator runs during the chart checks, so this preview has no finalizer and stays as is.
kubectl apply -n "$probe_ns" -f examples/preview-minimal.yaml >/dev/null
quiet helm uninstall "$release" -n "$namespace" --wait --timeout 2m >/dev/null
for crd in "${crd_names[@]}"; do
  kubectl get crd "$crd" >/dev/null 2>&1 || fail "helm uninstall deleted the CRD $crd"
done
kubectl get previewenv -n "$probe_ns" docs-pr-42 >/dev/null 2>&1 || fail "helm uninstall deleted a PreviewEnvironment"
install
kubectl get previewenv -n "$probe_ns" docs-pr-42 >/dev/null 2>&1 || fail "reinstalling lost a PreviewEnvironment"
kubectl delete namespace "$probe_ns" --timeout=60s >/dev/null

log "helm upgrade onto the rig"
quiet helm upgrade "$release" "$chart" -n "$namespace" --reuse-values \
  --set workers=8 --wait --timeout 2m >/dev/null
kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null
workers=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_WORKERS")].value}')
[[ $workers == 8 ]] || fail "upgrade did not apply workers=8 (got '$workers')"
wait_crds

log "tenant RBAC: the built-in edit and view roles cover the preview kinds (impersonation)"
kubectl create namespace "$tenant_ns" >/dev/null
kubectl create rolebinding ci -n "$tenant_ns" --clusterrole=edit --user=preview-chart-ci >/dev/null
kubectl create rolebinding developer -n "$tenant_ns" --clusterrole=view --user=preview-chart-developer >/dev/null
kubectl create clusterrolebinding preview-chart-auditor --clusterrole=view --user=preview-chart-auditor >/dev/null
# can <user> <verb> <resource>[/<subresource>] [namespace, or - for cluster scope]: "yes" or
# "no". kubectl auth can-i for the preview.dev kinds the API serves; for kinds it does not serve
# yet (previewtemplates, previewclasses before their CRDs exist) kubectl would send the group as
# part of the resource name, so those are asked with a SelfSubjectAccessReview of our own.
served=$(kubectl api-resources --api-group=preview.dev -o name 2>/dev/null || true)
can() {
  local user=$1 verb=$2 resource=${3%%/*} sub="" ns=${4:-$tenant_ns}
  [[ $3 == */* ]] && sub=${3#*/}
  [[ $ns == - ]] && ns=""
  if grep -qx "$resource.preview.dev" <<<"$served"; then
    kubectl auth can-i --as="$user" "$verb" "$resource.preview.dev" ${sub:+--subresource="$sub"} \
      ${ns:+-n "$ns"} 2>/dev/null || true
    return
  fi
  local allowed
  allowed=$(kubectl create --as="$user" --validate=false -o jsonpath='{.status.allowed}' -f - <<JSON
{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
 "spec": {"resourceAttributes": {"namespace": "$ns", "verb": "$verb", "group": "preview.dev",
   "resource": "$resource", "subresource": "$sub"}}}
JSON
  )
  if [[ $allowed == true ]]; then echo yes; else echo no; fi
}
# The aggregation controller fills edit and view asynchronously: wait for the first rule.
for _ in $(seq 1 60); do
  [[ $(can preview-chart-ci create previewenvironments) == yes &&
    $(can preview-chart-developer get previewenvironments) == yes ]] && break
  sleep 1
done
expect() {
  local want=$1 user=$2 verb=$3 resource=$4 ns=${5:-}
  local got
  got=$(can "$user" "$verb" "$resource" "$ns")
  [[ $got == "$want" ]] ||
    fail "can $user $verb $resource.preview.dev (namespace ${ns:-$tenant_ns}): got '$got', want '$want'"
}
for verb in create get list watch patch update delete deletecollection; do
  expect yes preview-chart-ci "$verb" previewenvironments
  expect yes preview-chart-ci "$verb" previewtemplates
done
expect no preview-chart-ci patch previewenvironments/status
expect no preview-chart-ci create previewenvironments default
expect no preview-chart-ci list previewclasses -
for verb in get list watch; do
  expect yes preview-chart-developer "$verb" previewenvironments
  expect yes preview-chart-developer "$verb" previewtemplates
done
for verb in create patch delete; do
  expect no preview-chart-developer "$verb" previewenvironments
done
expect no preview-chart-nobody get previewenvironments
expect no preview-chart-nobody create previewenvironments
# Cluster-scoped classes: readable through a ClusterRoleBinding of view, never writable.
expect yes preview-chart-auditor list previewclasses -
expect no preview-chart-auditor create previewclasses -
expect no preview-chart-developer list previewclasses -
log "chart checks passed"
