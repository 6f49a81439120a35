#!/usr/bin/env bash
# The Helm chart's checks, run by hack/test.sh against the rig (KUBECONFIG must point at it):
# lint; render with default and non-default values (CRDs identical to crds/, the default
# PreviewClass valid against its CRD, only environment variables and flags the operator reads,
# the GitHub App's and GitLab's Secret files, settings and webhook Ingress paths, the pods/log
# rule following testLogs.enabled, the Flux applier role and the operator's Flux rights following
# flux.enabled, every mounted Secret readable by the operator's user, RBAC without wildcards,
# replicaCount 0 and 1 without a PodDisruptionBudget, the release package of
# hack/chart-package.sh); the values schema refusing bad values; then on the rig: install (which
# installs the CRDs; the default class follows on the next upgrade when the CRDs are new),
# uninstall keeping the CRDs, the class and the previews, install again, upgrade, the tenant
# RBAC aggregated into the built-in edit and view roles, the admission policies (the operator's
# ServiceAccount writes only where it manages and binds only view, its log reader and the Flux
# applier (to preview-applier alone), nobody else sets its labels, Kubernetes' controllers
# exempt by name, pods in preview namespaces use platform Secret copies only to pull images, no
# tenant Ingress or HTTPRoute under a class's base domain), Secret and ConfigMap reads (nowhere
# but the platform Secrets namespace, never the release namespace, plus a team namespace once
# the team binds the source-reader ClusterRole there), pods/log (only where the operator bound
# its log reader; exec, attach, port-forward not), and what Flux may apply as preview-applier
# (edit minus the hardening and RBAC; images from the class's registries, the preview's host,
# ClusterIP Services, no ServiceAccount tokens), checked by impersonation. The chart stays installed (its ServiceAccount is what the operator
# runs as in the cluster tests) without its default class: the cluster tests use
# hack/classes/test.yaml as their only default class.
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
# The default PreviewClass renders once the API server serves the kind (Helm cannot create an
# object of a kind its CRD brings in the same install): as on a cluster with the CRDs.
class_kind=(--api-versions preview.dev/v1alpha1/PreviewClass)
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
  PodDisruptionBudget ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding; do
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
# The admission policies: Fail, Deny, aimed at the chart's ServiceAccount, every default kind.
hack/chart/admission-policies.py --operator "system:serviceaccount:$namespace:$release" \
  --resource deployments.apps --resource statefulsets.apps --resource jobs.batch --resource services \
  --resource ingresses.networking.k8s.io --resource networkpolicies.networking.k8s.io \
  --resource resourcequotas --resource limitranges --resource secrets --resource configmaps \
  --resource persistentvolumeclaims --resource serviceaccounts \
  --resource rolebindings.rbac.authorization.k8s.io --resource helmreleases.helm.toolkit.fluxcd.io \
  --resource kustomizations.kustomize.toolkit.fluxcd.io --resource gitrepositories.source.toolkit.fluxcd.io \
  --resource helmrepositories.source.toolkit.fluxcd.io --resource ocirepositories.source.toolkit.fluxcd.io \
  --flux-applier "$release-flux-applier" <<<"$default"
# Secrets and ConfigMaps: no cluster-wide read; the source-reader ClusterRole exists, unbound,
# and the Deployment names it and the ServiceAccount to the operator. The class's Secrets are
# read in a namespace of their own (created, kept on uninstall), never in the release
# namespace, where the operator's credentials are.
platform_ns=$namespace-platform-secrets
hack/chart/source-reader.py --release-namespace "$namespace" --platform-namespace "$platform_ns" \
  --service-account "$release" --role "$release-source-reader" <<<"$default"
python3 -c '
import sys, yaml
namespaces = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Namespace"]
assert [n["metadata"]["name"] for n in namespaces] == [sys.argv[1]], namespaces
assert namespaces[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, namespaces
' "$platform_ns" <<<"$default" || fail "default render: want the Namespace $platform_ns, kept on uninstall"
# The operator's environment: only variables its flags read (src/cli.rs, src/config.rs), and
# numbers as digits (Helm reads values' numbers as floats: 1048576 would print as 1.048576e+06);
# its arguments: only flags it has (clap names --a-b after the field a_b).
mapfile -t flag_envs < <(grep -ho 'env = "PREVIEW_OPERATOR_[A-Z_]*"' src/cli.rs src/config.rs | cut -d'"' -f2 | sort -u)
((${#flag_envs[@]} > 10)) || fail "found only ${#flag_envs[@]} PREVIEW_OPERATOR_ variables in src/cli.rs and src/config.rs"
for rendered in "$default" "$(render -f hack/chart/values-nondefault.yaml)"; do
  while read -r env; do
    printf '%s\n' "${flag_envs[@]}" | grep -qx "$env" || fail "the Deployment sets $env, which no flag of preview-operator run reads"
  done < <(grep -o 'name: PREVIEW_OPERATOR_[A-Z_]*' <<<"$rendered" | cut -d' ' -f2)
  if grep -E 'name: PREVIEW_OPERATOR_[A-Z_]*, value: "[0-9.]+e\+' <<<"$rendered"; then
    fail "a number reaches the operator in exponent notation"
  fi
  while read -r flag; do
    grep -qE "^ *pub ${flag//-/_}:" src/cli.rs src/config.rs || fail "the Deployment passes --$flag, which preview-operator run does not have"
  done < <(python3 -c '
import sys, yaml
deployment = next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Deployment")
for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]:
    if arg.startswith("--"):
        print(arg[2:].split("=", 1)[0])
' <<<"$rendered")
done
for want in "PREVIEW_OPERATOR_NAMESPACE_PREFIX, value: \"pr-\"" "PREVIEW_OPERATOR_PROGRESS_DEADLINE, value: \"5m\"" \
  "PREVIEW_OPERATOR_WEBHOOK_MAX_BODY, value: \"524288\"" "PREVIEW_OPERATOR_SCM_RESYNC_INTERVAL, value: \"10m\""; do
  grep -qF -- "$want" <<<"$default" || fail "default render lacks: $want"
done

# The wake listener: its own port on the Service and the container, and the Service's DNS name
# for the ExternalName Service a sleeping preview's Ingress routes to (port 8081).
wake_ports() {
  python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == sys.argv[1])
wake = [p for p in service["spec"]["ports"] if p["name"] == "wake"]
assert wake == [{"name": "wake", "port": 8081, "targetPort": "wake"}], service["spec"]["ports"]
deployment = next(d for d in docs if d["kind"] == "Deployment")
container = deployment["spec"]["template"]["spec"]["containers"][0]
assert {"name": "wake", "containerPort": 8081} in container["ports"], container["ports"]
env = {e["name"]: e.get("value") for e in container["env"]}
assert env.get("PREVIEW_OPERATOR_WAKE_ADDR") == "0.0.0.0:8081", env
assert env.get("PREVIEW_OPERATOR_WAKE_SERVICE") == sys.argv[2], (env.get("PREVIEW_OPERATOR_WAKE_SERVICE"), sys.argv[2])
' "$@"
}
wake_ports "$release" "$release.$namespace.svc.cluster.local" <<<"$default" ||
  fail "default render: the wake listener's ports or environment are wrong"
render -f hack/chart/values-nondefault.yaml | wake_ports "$release" "$release.$namespace.svc.cluster.example" ||
  fail "non-default render: the wake listener's ports or environment (clusterDomain) are wrong"

log "helm template: the operator's listeners (probes' port, NetworkPolicy)"
# listeners <want JSON>: the probes ask the port health (8082, PREVIEW_OPERATOR_HEALTH_ADDR), and
# the operator's NetworkPolicy (none when "policy" is null) selects exactly the Deployment's pods,
# restricts ingress only, and has exactly these rules: http and wake from the ingress
# controller's namespace, http from the metrics namespaces (by name and/or selector), health
# from anywhere.
listeners() {
  python3 -c '
import json, sys, yaml
want = json.loads(sys.argv[1])
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
deployment = next(d for d in docs if d["kind"] == "Deployment")
pod = deployment["spec"]["template"]
container = pod["spec"]["containers"][0]
assert {"name": "health", "containerPort": 8082} in container["ports"], container["ports"]
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    assert container[probe]["httpGet"] == {"path": path, "port": "health"}, container[probe]
env = {e["name"]: e.get("value") for e in container["env"]}
assert env.get("PREVIEW_OPERATOR_HEALTH_ADDR") == "0.0.0.0:8082", env
policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
if want["policy"] is None:
    assert policies == [], policies
    sys.exit(0)
assert len(policies) == 1, policies
spec = policies[0]["spec"]
assert spec["podSelector"] == deployment["spec"]["selector"], (spec["podSelector"], deployment["spec"]["selector"])
assert spec["policyTypes"] == ["Ingress"], spec["policyTypes"]
def ports(rule):
    assert all(p.get("protocol") == "TCP" for p in rule["ports"]), rule
    return sorted(p["port"] for p in rule["ports"])
rules = [(rule.get("from"), ports(rule)) for rule in spec["ingress"]]
assert rules == [(f, p) for f, p in want["policy"]], json.dumps(rules)
' "$1"
}
by_name() { printf '{"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": %s}]}' "$1"; }
ingress_rule() { printf '[[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "%s"}}}], ["http", "wake"]]' "$1"; }
health_rule='[null, ["health"]]'
listeners "{\"policy\": [$(ingress_rule ingress-nginx), [[{\"namespaceSelector\": $(by_name '["monitoring"]')}], [\"http\"]], $health_rule]}" \
  <<<"$default" || fail "default render: the probes' port or the operator's NetworkPolicy is wrong"
render --set networkPolicy.ingressControllerNamespace=traefik --set 'networkPolicy.metricsNamespaces={prom,obs}' \
  --set networkPolicy.metricsNamespaceSelector.matchLabels.team=observability |
  listeners "{\"policy\": [$(ingress_rule traefik), [[{\"namespaceSelector\": $(by_name '["prom", "obs"]')},
    {\"namespaceSelector\": {\"matchLabels\": {\"team\": \"observability\"}}}], [\"http\"]], $health_rule]}" ||
  fail "networkPolicy.*: the rules do not follow the values"
render --set 'networkPolicy.metricsNamespaces=null' --set-json 'networkPolicy.extraIngress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": "http", "protocol": "TCP"}]}]' |
  listeners "{\"policy\": [$(ingress_rule ingress-nginx), $health_rule, [[{\"ipBlock\": {\"cidr\": \"10.0.0.0/16\"}}], [\"http\"]]]}" ||
  fail "networkPolicy without metrics namespaces, with extraIngress: wrong rules"
render --set networkPolicy.enabled=false | listeners '{"policy": null}' ||
  fail "networkPolicy.enabled=false: still a NetworkPolicy, or the probes moved"
for bad in "networkPolicy.enabled=maybe" "networkPolicy.ingressControllerNamespace=Ingress_Nginx" \
  "networkPolicy.metricsNamespaces[0]=Monitoring" "networkPolicy.metricsNamespaceSelector.team=x" \
  "networkPolicy.podSelector.app=x" "service.port=8082" "gitlab.allowHttp=yes"; do
  if out=$(render --set "$bad" 2>&1) || ! grep -q "schema" <<<"$out"; then
    fail "the schema accepted --set $bad: $out"
  fi
done
# {} as a namespace selector would let every namespace scrape (and post webhooks).
if out=$(render --set-json 'networkPolicy.metricsNamespaceSelector={}' 2>&1) || ! grep -q "schema" <<<"$out"; then
  fail "the schema accepted an empty metricsNamespaceSelector: $out"
fi
# A plain http GitLab only with gitlab.allowHttp, which reaches the operator.
if out=$(render --set gitlab.url=http://gitlab.internal --set gitlab.token.existingSecret=gl 2>&1) ||
  ! grep -q "gitlab.allowHttp" <<<"$out"; then
  fail "an http gitlab.url without gitlab.allowHttp must fail naming it, got: $out"
fi
# A pipe into grep reads to the end (no -q): grep -q stops at the first match, and with pipefail
# the writer's SIGPIPE (helm's output is larger than the pipe's buffer) failed the check.
render --set gitlab.url=http://gitlab.internal --set gitlab.token.existingSecret=gl --set gitlab.allowHttp=true |
  grep -F 'PREVIEW_OPERATOR_GITLAB_ALLOW_HTTP, value: "true"' >/dev/null || fail "gitlab.allowHttp does not reach the operator"
grep -q PREVIEW_OPERATOR_GITLAB_ALLOW_HTTP <<<"$default" && fail "PREVIEW_OPERATOR_GITLAB_ALLOW_HTTP must be off by default"

log "helm template: GitHub App, GitLab, test logs"
# scm_wiring <want JSON>: the Deployment's secret files and SCM variables are exactly these.
# "files": {flag: [Secret, key]} for every --*-file argument, read back through its volume
# mount (a directory of its own) to the Secret volume (mode 0440); "env": the
# PREVIEW_OPERATOR_GITHUB_APP_* and PREVIEW_OPERATOR_GITLAB_* variables.
scm_wiring() {
  python3 -c '
import json, os, sys, yaml
want = json.loads(sys.argv[1])
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
container = pod["containers"][0]
mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
files = {}
for arg in container["args"]:
    flag, _, path = arg.partition("=")
    if not flag.endswith("-file"):
        continue
    mount = mounts.get(os.path.dirname(path))
    assert mount and mount.get("readOnly"), f"{arg}: no read-only volume mount at {os.path.dirname(path)}"
    secret = volumes[mount["name"]]["secret"]
    assert secret.get("defaultMode") == 0o440, f"{arg}: Secret {secret} is not mode 0440"
    files[flag] = [secret["secretName"], os.path.basename(path)]
assert len(mounts) == len(files), f"Secret mounts {sorted(mounts)} that no flag reads ({files})"
env = {e["name"]: e.get("value") for e in container["env"]
       if e["name"].startswith(("PREVIEW_OPERATOR_GITHUB_APP_", "PREVIEW_OPERATOR_GITLAB_"))}
want_files, want_env = want["files"], want["env"]
assert files == want_files, f"secret files {files}, want {want_files}"
assert env == want_env, f"environment {env}, want {want_env}"
' "$1"
}
scm_wiring '{"files": {}, "env": {}}' <<<"$default" || fail "default render: no App, GitLab or Secret file is configured"
render -f hack/chart/values-nondefault.yaml | scm_wiring '{"files": {
    "--github-app-private-key-file": ["github-app", "app.pem"], "--github-token-file": ["github-token", "token"],
    "--github-webhook-secret-file": ["github-webhook", "secret"], "--gitlab-token-file": ["gitlab-token", "api-token"],
    "--gitlab-webhook-secret-file": ["gitlab-webhook", "secret-token"]},
  "env": {"PREVIEW_OPERATOR_GITHUB_APP_ID": "123456", "PREVIEW_OPERATOR_GITLAB_URL": "https://gitlab.example.com",
    "PREVIEW_OPERATOR_GITLAB_MR_NOTES": "true", "PREVIEW_OPERATOR_GITLAB_ENVIRONMENTS": "true"}}' || fail "non-default render: the App's and GitLab's Secrets or settings are wrong"
# The App alone, its id as --set gives it (an integer) and as a values file may (a string).
render --set github.app.id=2345678 --set github.app.privateKey.existingSecret=preview-app | scm_wiring '{
  "files": {"--github-app-private-key-file": ["preview-app", "private-key"]},
  "env": {"PREVIEW_OPERATOR_GITHUB_APP_ID": "2345678"}}' || fail "github.app: wrong key file or id"
render --set-string github.app.id=2345678 --set github.app.privateKey.existingSecret=preview-app | scm_wiring '{
  "files": {"--github-app-private-key-file": ["preview-app", "private-key"]},
  "env": {"PREVIEW_OPERATOR_GITHUB_APP_ID": "2345678"}}' || fail "github.app.id as a string: wrong key file or id"
# GitLab's token alone, its webhook alone: the URL goes with either.
render --set gitlab.token.existingSecret=gitlab | scm_wiring '{"files": {"--gitlab-token-file": ["gitlab", "token"]},
  "env": {"PREVIEW_OPERATOR_GITLAB_URL": "https://gitlab.com"}}' || fail "gitlab.token: wrong token file or URL"
render --set gitlab.webhook.existingSecret=gitlab-hook | scm_wiring '{
  "files": {"--gitlab-webhook-secret-file": ["gitlab-hook", "webhook-secret"]},
  "env": {"PREVIEW_OPERATOR_GITLAB_URL": "https://gitlab.com"}}' || fail "gitlab.webhook: wrong secret file or URL"
# Halves that do nothing, or keep the operator from starting, fail naming what is missing.
for pair in "github.app.id=1:github.app.privateKey.existingSecret" "github.app.privateKey.existingSecret=k:github.app.id" \
  "gitlab.mrNotes=true:gitlab.token.existingSecret" "gitlab.environments=true:gitlab.token.existingSecret" \
  "gitlab.webhook.ingress.enabled=true:gitlab.webhook.existingSecret"; do
  if out=$(render --set "${pair%%:*}" 2>&1) || ! grep -qF -- "${pair##*:}" <<<"$out"; then
    fail "--set ${pair%%:*} alone must fail naming ${pair##*:}, got: $out"
  fi
done
# webhook_ingresses: "<name> <host> <path>,<path>" per Ingress, sorted.
webhook_ingresses() {
  python3 -c '
import sys, yaml
for d in sorted((d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Ingress"), key=lambda d: d["metadata"]["name"]):
    for rule in d["spec"]["rules"]:
        print(d["metadata"]["name"], rule["host"], ",".join(p["path"] for p in rule["http"]["paths"]))
'
}
# The GitHub webhook's Ingress routes /webhooks/gitlab too, unless GitLab's has its own.
got=$(render -f hack/chart/values-nondefault.yaml | webhook_ingresses)
[[ $got == "$release-webhook hooks.example.com /webhooks/github,/webhooks/gitlab" ]] ||
  fail "non-default render: the webhook Ingress should route GitHub's and GitLab's paths, got: $got"
got=$(render -f hack/chart/values-nondefault.yaml --set gitlab.webhook.ingress.enabled=true \
  --set gitlab.webhook.ingress.host=gitlab-hooks.example.com | webhook_ingresses)
[[ $got == "$release-gitlab-webhook gitlab-hooks.example.com /webhooks/gitlab"$'\n'"$release-webhook hooks.example.com /webhooks/github" ]] ||
  fail "gitlab.webhook.ingress: want an Ingress of its own for /webhooks/gitlab only, got: $got"
got=$(render --set gitlab.webhook.existingSecret=gitlab-hook --set gitlab.webhook.ingress.enabled=true \
  --set gitlab.webhook.ingress.host=gitlab-hooks.example.com | webhook_ingresses)
[[ $got == "$release-gitlab-webhook gitlab-hooks.example.com /webhooks/gitlab" ]] ||
  fail "GitLab alone: want only its webhook Ingress, got: $got"
# Test logs: never pods/log cluster-wide; a ClusterRole for it that the chart does not bind and
# the operator may bind (itself, per preview namespace, told its name); none of it when off.
hack/chart/log-reader.py --release "$release" --role "$release-log-reader" --also-bindable "$release-flux-applier" \
  <<<"$default" || fail "default render: pods/log must be granted only through the unbound $release-log-reader"
render --set testLogs.enabled=false | hack/chart/log-reader.py --release "$release" --none --also-bindable "$release-flux-applier" ||
  fail "testLogs.enabled=false must leave no pods/log rule, log reader or bind on it"
# Flux delivery: the applier role (edit minus the hardening and RBAC) that the chart does not
# bind and the operator may bind, its name told to the operator, the operator's rights on the
# Flux kinds; none of it when off (and no preview-content policy).
hack/chart/flux-applier.py --release "$release" --role "$release-flux-applier" <<<"$default" ||
  fail "default render: the Flux applier role or the operator's Flux rights are wrong"
render --set flux.enabled=false | hack/chart/flux-applier.py --release "$release" --none ||
  fail "flux.enabled=false must leave no Flux applier, bind on it, Flux rights or variable"
render --set flux.enabled=false | hack/chart/admission-policies.py --operator "system:serviceaccount:$namespace:$release" \
  --resource deployments.apps || fail "flux.enabled=false must leave the six policies without Flux's"
# helm upgrade --reuse-values from 0.5.0 lacks the new blocks: a clear failure, not a nil pointer.
for block in github.app gitlab testLogs; do
  if out=$(render --set "$block=null" 2>&1) || ! grep -q "$block missing from the values.*reset-then-reuse-values" <<<"$out"; then
    fail "values without $block must fail naming --reset-then-reuse-values, got: $out"
  fi
done
# ... and from 0.6.0 lacks platformSecrets (and its Secrets are still in the release namespace)
# and flux.
if out=$(render --set flux=null 2>&1) || ! grep -q "flux is missing from the values.*reset-then-reuse-values" <<<"$out"; then
  fail "values without flux must fail naming --reset-then-reuse-values, got: $out"
fi
if out=$(render --set platformSecrets=null 2>&1) || ! grep -q "platformSecrets is missing from the values.*reset-then-reuse-values.*move the Secrets" <<<"$out"; then
  fail "values without platformSecrets must fail naming --reset-then-reuse-values and the move, got: $out"
fi

log "helm template: the default PreviewClass"
# helm template knows no cluster: without the served kind there is no class to render.
hack/chart/previewclass.py --none <<<"$default"
# With the defaults: named standard, the default class, kept on uninstall, admitting nobody
# (no tenants), the operator's ttl, limit and hardening defaults spelt out.
render "${class_kind[@]}" | hack/chart/previewclass.py --crd crds/previewclasses.yaml --name standard --spec '{
  "ttl": {"default": "72h", "max": "7d"}, "limits": {"activePerNamespace": 10},
  "namespace": {"podSecurityLevel": "restricted", "egress": {"allowDns": true},
    "quota": {"requests.cpu": "4", "requests.memory": "8Gi", "limits.memory": "16Gi",
      "requests.ephemeral-storage": "20Gi", "limits.ephemeral-storage": "40Gi",
      "requests.nvidia.com/gpu": "0", "requests.amd.com/gpu": "0", "persistentvolumeclaims": "10",
      "services.loadbalancers": "0", "services.nodeports": "0", "pods": "50"},
    "limitRange": {"defaultRequests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "100Mi"},
      "defaultLimits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
      "max": {"cpu": "2", "memory": "4Gi"}}}}' >/dev/null
# Every field from the values, with the API's names; empty lists and null keys left out.
render "${class_kind[@]}" -f hack/chart/values-nondefault.yaml |
  hack/chart/previewclass.py --crd crds/previewclasses.yaml --name platform-default --spec '{
  "tenants": [
    {"namespaces": ["team-shop"], "repositories": ["acme/shop", "acme/shop-*"],
     "viewers": [{"kind": "Group", "name": "shop-developers"}]},
    {"namespaceSelector": {"matchLabels": {"preview.example.com/tenant": "true"}}, "repositories": ["acme/*"]}],
  "ttl": {"default": "1d", "max": "3d"}, "maxLifetime": "14d",
  "limits": {"activePerNamespace": 5, "activePerRepository": 20, "active": 500},
  "namespace": {"podSecurityLevel": "baseline",
    "egress": {"allowDns": false, "allowCidrs": ["10.20.0.0/16"], "allowNamespaces": ["shared-services"]},
    "quota": {"requests.cpu": "2", "limits.memory": "16Gi",
      "requests.ephemeral-storage": "20Gi", "limits.ephemeral-storage": "40Gi",
      "requests.nvidia.com/gpu": "0", "requests.amd.com/gpu": "0", "persistentvolumeclaims": "10",
      "services.loadbalancers": "0", "services.nodeports": "0", "pods": "20"},
    "limitRange": {"defaultRequests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "100Mi"},
      "defaultLimits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"}}},
  "ingress": {"baseDomain": "preview.example.com", "className": "nginx", "tlsSecretName": "wildcard-tls",
    "controllerNamespace": "ingress"},
  "allowedRegistries": ["registry.example.com/acme/"], "allowedPodAnnotations": ["prometheus.io/*"]}' >/dev/null
# Values on the command line: a tenant, a quota key with an escaped dot.
render "${class_kind[@]}" --set 'defaultClass.tenants[0].namespaces[0]=team-a' --set 'defaultClass.tenants[0].repositories[0]=acme/a' \
  --set 'defaultClass.namespace.quota.requests\.cpu=8' | python3 -c '
import sys, yaml
spec = next(d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") == "PreviewClass")["spec"]
assert spec["tenants"] == [{"namespaces": ["team-a"], "repositories": ["acme/a"]}], spec["tenants"]
assert spec["namespace"]["quota"]["requests.cpu"] == "8", spec["namespace"]["quota"]
' || fail "--set of a tenant and of defaultClass.namespace.quota.requests\\.cpu did not reach the class"
# The sleep policy: only the keys set, allowNeverSleep only when true.
render "${class_kind[@]}" --set defaultClass.sleep.afterIdle=2h --set 'defaultClass.sleep.schedules[0].days=Mon-Fri\,Sun' \
  --set 'defaultClass.sleep.schedules[0].sleepAt=20:00' --set 'defaultClass.sleep.schedules[0].wakeAt=08:00' \
  --set 'defaultClass.sleep.schedules[0].timeZone=Europe/Berlin' --set defaultClass.sleep.deleteAfterSleeping=72h \
  --set defaultClass.sleep.allowNeverSleep=false | python3 -c '
import sys, yaml
spec = next(d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") == "PreviewClass")["spec"]
want = {"afterIdle": "2h", "deleteAfterSleeping": "72h",
        "schedules": [{"days": "Mon-Fri,Sun", "sleepAt": "20:00", "wakeAt": "08:00", "timeZone": "Europe/Berlin"}]}
assert spec.get("sleep") == want, spec.get("sleep")
' || fail "defaultClass.sleep did not reach the class as given"
render "${class_kind[@]}" | python3 -c '
import sys, yaml
spec = next(d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") == "PreviewClass")["spec"]
assert "sleep" not in spec, spec["sleep"]
' || fail "the default class must not sleep by default"
render "${class_kind[@]}" --set defaultClass.enabled=false | hack/chart/previewclass.py --none
# A ttl default above the maximum would refuse every preview: the chart says so instead.
if out=$(render "${class_kind[@]}" --set defaultClass.ttl.default=1d12h --set defaultClass.ttl.max=1d 2>&1) ||
  ! grep -q "defaultClass.ttl.default (1d12h) is longer than defaultClass.ttl.max (1d)" <<<"$out"; then
  fail "a ttl default above the maximum must fail naming both, got: $out"
fi
if out=$(render "${class_kind[@]}" --set defaultClass.ingress.className=nginx 2>&1) || ! grep -q "without defaultClass.ingress.baseDomain" <<<"$out"; then
  fail "an ingress class without a base domain must fail, got: $out"
fi
# Values of chart 0.2.0 that moved into the class fail naming where they went; values without
# defaultClass (helm upgrade --reuse-values from 0.2.0) name --reset-then-reuse-values.
if out=$(render --set defaultClass=null 2>&1) || ! grep -q "defaultClass is missing.*reset-then-reuse-values" <<<"$out"; then
  fail "values without defaultClass must fail naming --reset-then-reuse-values, got: $out"
fi
if out=$(render --set policy.maxTtl=7d --set ingress.baseDomain=example.com 2>&1) ||
  ! grep -q "policy.maxTtl -> defaultClass.ttl.max, ingress.baseDomain -> defaultClass.ingress.baseDomain" <<<"$out" ||
  ! grep -qF -- "--set policy.maxTtl=null --set ingress.baseDomain=null" <<<"$out" ||
  ! grep -q "reset-then-reuse-values" <<<"$out"; then
  fail "values of chart 0.2.0 must fail naming their new place, got: $out"
fi
# Builds a packaged chart too: the CRD link must be followed into the archive.
package_dir=$(mktemp -d)
quiet helm package "$chart" -d "$package_dir" >/dev/null
quiet helm template "$release" "$package_dir"/preview-operator-*.tgz --kube-version "$kube_version" |
  hack/chart/crds-match.py crds/*.yaml >/dev/null
quiet helm show readme "$package_dir"/preview-operator-*.tgz | grep "^## Uninstalling" >/dev/null ||
  fail "helm show readme lacks the uninstall order"
rm -rf "$package_dir"

log "helm template: the Grafana dashboard"
# Off by default; when on, a ConfigMap for Grafana's sidecar whose JSON is the chart's file, on
# the Prometheus data source variable, querying only metrics the README documents.
hack/chart/dashboard.py --none <<<"$default"
dashboard=(--json "$chart/dashboards/preview-operator.json" --documented docs/platform/operations.md)
render --set grafanaDashboard.enabled=true | hack/chart/dashboard.py "${dashboard[@]}" --namespace "$namespace"
render -f hack/chart/values-nondefault.yaml | hack/chart/dashboard.py "${dashboard[@]}" --namespace monitoring \
  --label release=prometheus --annotation grafana_folder=Previews >/dev/null
render --set grafanaDashboard.enabled=true --set grafanaDashboard.labels.grafana_dashboard=previews |
  hack/chart/dashboard.py --json "$chart/dashboards/preview-operator.json" --namespace "$namespace" \
    --label grafana_dashboard=previews >/dev/null

log "helm template (switches off)"
off=$(render --set crds.install=false --set tenantRbac.enabled=false)
grep -q "^kind: CustomResourceDefinition$" <<<"$off" && fail "crds.install=false still renders a CRD"
grep -q "aggregate-to-" <<<"$off" && fail "tenantRbac.enabled=false still renders aggregated roles"
# Only the CRDs: the platform Secrets' namespace and the default class are kept on purpose.
render --set crds.keep=false | python3 -c '
import sys, yaml
crds = [d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") == "CustomResourceDefinition"]
kept = [c["metadata"]["name"] for c in crds
        if "helm.sh/resource-policy" in (c["metadata"].get("annotations") or {})]
sys.exit(f"no CRDs rendered" if not crds else f"kept: {kept}" if kept else 0)
' || fail "crds.keep=false still keeps the CRDs (or renders none)"
render --set admissionPolicies.enabled=false | hack/chart/admission-policies.py --none
# helm upgrade --reuse-values from a chart without them keeps that chart's defaults: a clear failure,
# never an upgrade that silently drops the policies.
if out=$(render --set admissionPolicies=null 2>&1) || ! grep -q "reset-then-reuse-values" <<<"$out"; then
  fail "values without admissionPolicies must fail naming --reset-then-reuse-values, got: $out"
fi

log "helm template (non-default values)"
custom=$(render -f hack/chart/values-nondefault.yaml)
for want in "kind: ServiceMonitor" "PREVIEW_OPERATOR_NAMESPACE_PREFIX, value: \"preview-\"" \
  "PREVIEW_OPERATOR_PROGRESS_DEADLINE, value: \"10m\"" "PREVIEW_OPERATOR_WEBHOOK_MAX_BODY, value: \"2097152\"" \
  "replicas: 3" "registry.example.com/preview-operator:1.2.3" '"--workers=32"' \
  "--github-token-file=/etc/preview-operator/github-token/token" "path: /webhooks/github" \
  "--github-webhook-secret-file=/etc/preview-operator/github-webhook/secret" "hooks.example.com" \
  "name: $release-class-reader" "name: platform-team"; do
  grep -qF -- "$want" <<<"$custom" || fail "non-default render lacks: $want"
done

hack/chart/source-reader.py --release-namespace "$namespace" --platform-namespace platform-secrets \
  --service-account preview-bot --role "$release-source-reader" <<<"$custom" >/dev/null
grep -q "^kind: Namespace$" <<<"$custom" && fail "platformSecrets.createNamespace=false still renders a Namespace"

# The policies follow serviceAccount.name and admissionPolicies.*.
# managedResources without the Flux kinds: flux.enabled adds them.
hack/chart/admission-policies.py --operator "system:serviceaccount:$namespace:preview-bot" \
  --resource deployments.apps --resource configmaps --resource cronjobs.batch \
  --trusted argocd-application-controller --trusted platform-admins --flux-applier "$release-flux-applier" <<<"$custom"
hack/chart/flux-applier.py --release "$release" --role "$release-flux-applier" <<<"$custom" >/dev/null

log "every mounted Secret is readable by the operator's user"
hack/chart/secrets-readable.py --self-test
hack/chart/secrets-readable.py <<<"$custom" >/dev/null
hack/chart/secrets-readable.py <<<"$default" >/dev/null

log "values schema refuses bad values"
for bad in "logFormat=xml" "replicaCount=-1" "replicaCount=11" "github.apiUrl=ftp://x" "policy.progressDeadline=forever" \
  "policy.namespacePrefix=PR_" "unknownKey=1" "service.port=70000" "crds.install=maybe" "tenantRbac.enabled=1" \
  "defaultClass.enabled=maybe" "defaultClass.name=Standard" "defaultClass.limits.activePerNamespace=0" \
  "defaultClass.limits.active=-1" "defaultClass.namespace.podSecurityLevel=none" "defaultClass.ttl.max=forever" \
  "defaultClass.maxLifetime=2 weeks" "defaultClass.namespace.quota.cpu=a b" "defaultClass.namespace.quota=cpu" \
  "defaultClass.namespace.egress.allowDNS=true" "defaultClass.namespace.egress.allowCidrs[0]=internet" \
  "defaultClass.tenants[0].namespaces[0]=team-a" \
  "defaultClass.tenants[0].namespaces[0]=team-a,defaultClass.tenants[0].repositories[0]=acme" \
  "defaultClass.ingress.baseDomain=Preview.Example.com" "defaultClass.ingress.tlsSecret=x" \
  "tenantRbac.classReaderSubjects[0].kind=Robot" "admissionPolicies.enabled=maybe" \
  "admissionPolicies.managedResources[0]=Deployments" "admissionPolicies.managedResources[0]=events" \
  "admissionPolicies.managedResources={}" "admissionPolicies.trustedUsers[0]=it's" \
  "grafanaDashboard.enabled=maybe" "grafanaDashboard.namespace=Monitoring" "grafanaDashboard.folder=x" \
  "service.port=8081" "clusterDomain=Cluster_Local" "defaultClass.sleep.afterIdle=soon" \
  "defaultClass.sleep.schedules[0].days=weekdays" "defaultClass.sleep.schedules[0].days=Mon" \
  "defaultClass.sleep.neverSleep=true" "gitlab.mrNotes=yes" "github.deployments=yes" "gitlab.environments=1" "gitlab.url=gitlab.com" "gitlab.token.key=" \
  "gitlab.webhook.ingress.enabled=1" "gitlab.projects[0]=x" "github.app.id=abc" "github.app.id=0" "github.app.id=-5" \
  "github.app.privateKey.name=x" "testLogs.enabled=maybe" "testLogs.tail=10" \
  "platformSecrets.namespace=Platform_Secrets" "platformSecrets.createNamespace=maybe" "platformSecrets.name=x" \
  "flux.enabled=maybe" "flux.applierRole=edit"; do
  if out=$(render --set "$bad" 2>&1); then
    fail "the schema accepted --set $bad"
  fi
  grep -q "values don't meet the specifications of the schema\|schema" <<<"$out" ||
    fail "--set $bad failed without naming the schema: $out"
done

log "the release's chart package (hack/chart-package.sh, as .github/workflows/release.yml runs it)"
package_dir=$(mktemp -d)
quiet hack/chart-package.sh v9.8.7-rc.1 ghcr.io/some-fork/preview-operator "$package_dir" \
  https://github.com/some-fork/preview-operator >/dev/null
package=$package_dir/preview-operator-9.8.7-rc.1.tgz
[[ -f $package ]] || fail "hack/chart-package.sh made no $package"
helm show chart "$package" | grep -x 'version: 9.8.7-rc.1' >/dev/null || fail "the package's version is not the tag's"
helm show chart "$package" | grep -x 'appVersion: 9.8.7-rc.1' >/dev/null || fail "the package's appVersion is not the tag's"
helm show chart "$package" | grep -x 'home: https://github.com/some-fork/preview-operator' >/dev/null || fail "the package's home is not its source"
quiet helm template "$release" "$package" -n "$namespace" --kube-version "$kube_version" |
  grep -F 'image: "ghcr.io/some-fork/preview-operator:9.8.7-rc.1"' >/dev/null ||
  fail "the package's Deployment does not pull the release's image"
hack/chart/crds-match.py crds/*.yaml < <(quiet helm template "$release" "$package" -n "$namespace" --kube-version "$kube_version") >/dev/null ||
  fail "the package's CRDs differ from crds/"
rm -rf "$package_dir"

log "helm template: replicaCount 0 and 1 (no PodDisruptionBudget below 2 replicas)"
# replicas <want replicas> <want PDBs>: the Deployment's replicas, and how many
# PodDisruptionBudgets render (one with 0 or 1 replicas would block every drain of their node).
replicas() {
  python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
deployment = next(d for d in docs if d["kind"] == "Deployment")
assert deployment["spec"]["replicas"] == int(sys.argv[1]), deployment["spec"]["replicas"]
pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
assert len(pdbs) == int(sys.argv[2]), pdbs
' "$@"
}
replicas 2 1 <<<"$default" || fail "default render: want 2 replicas and a PodDisruptionBudget"
for count in 0 1; do
  render --set replicaCount=$count | replicas $count 0 ||
    fail "--set replicaCount=$count: want $count replicas and no PodDisruptionBudget"
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

# install: prints Helm's output (with the NOTES).
install() {
  quiet helm install "$release" "$chart" -n "$namespace" --create-namespace \
    --set replicaCount=1 --wait --timeout 2m
  kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null
  wait_crds
}
upgrade() {
  quiet helm upgrade "$release" "$chart" -n "$namespace" --reuse-values --wait --timeout 2m "$@"
}

# The chart's default PreviewClass (defaultClass.name).
class=standard
# class_is_the_releases <what>: the class exists, kubectl get previewclass lists it, and it is
# the release's default class, kept on uninstall.
class_is_the_releases() {
  kubectl get previewclass --no-headers 2>/dev/null | grep "^$class " >/dev/null ||
    fail "$1: kubectl get previewclass does not list $class"
  kubectl get previewclass "$class" -o json | python3 -c '
import json, sys
meta = json.load(sys.stdin)["metadata"]
annotations, labels = meta.get("annotations", {}), meta.get("labels", {})
want = {"preview.dev/is-default-class": "true", "helm.sh/resource-policy": "keep",
        "meta.helm.sh/release-name": sys.argv[1], "meta.helm.sh/release-namespace": sys.argv[2]}
wrong = {k: annotations.get(k) for k, v in want.items() if annotations.get(k) != v}
managed_by = labels.get("app.kubernetes.io/managed-by")
if wrong or managed_by != "Helm":
    sys.exit(f"annotations {wrong} (want {want}), managed-by {managed_by}")
' "$release" "$namespace" || fail "$1: the PreviewClass $class is not the release's kept default class"
}
# class_field <jsonpath>: a field of the live class.
class_field() { kubectl get previewclass "$class" -o jsonpath="{$1}"; }

# Test namespaces and the cluster-scoped objects made here, removed on exit.
probe_ns=preview-chart-probe
tenant_ns=preview-chart-tenant
managed_ns=preview-chart-managed
optin_ns=preview-chart-optin
work=""
cleanup() {
  kubectl delete clusterrolebinding preview-chart-auditor preview-chart-namespace-editor --ignore-not-found \
    >/dev/null 2>&1 || true
  kubectl delete clusterrole preview-chart-namespace-editor preview-chart-routes --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete previewclass preview-chart-hosts --ignore-not-found >/dev/null 2>&1 || true
  # The HTTPRoute CRD only if this script made it (a stand-in: the rig has no Gateway API).
  kubectl delete crd -l preview.dev/chart-test-stand-in=true --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$probe_ns" "$tenant_ns" "$managed_ns" "$optin_ns" --ignore-not-found --wait=false \
    >/dev/null 2>&1 || true
  # The chart's class outlives its release (resource-policy keep); the cluster tests must not
  # find it (the oldest default class serves previews that name none).
  kubectl delete previewclass "$class" --ignore-not-found >/dev/null 2>&1 || true
  [[ -z $work ]] || rm -rf "$work"
}
trap cleanup EXIT

# Leftovers of an earlier run on the same rig.
cleanup
# Manifests for the admission policy checks.
work=$(mktemp -d)
kubectl wait --for=delete namespace/"$probe_ns" namespace/"$tenant_ns" namespace/"$managed_ns" \
  namespace/"$optin_ns" --timeout=60s \
  >/dev/null 2>&1 || true
if helm status "$release" -n "$namespace" >/dev/null 2>&1; then
  log "uninstalling the release left by an earlier run"
  quiet helm uninstall "$release" -n "$namespace" --wait --timeout 2m >/dev/null
fi

log "helm install onto the rig (installs the CRDs)"
kind_served=false
kubectl get crd previewclasses.preview.dev >/dev/null 2>&1 && kind_served=true
notes=$(install)
if [[ $kind_served == false ]]; then
  # Helm builds every object before creating any, so the install that creates the PreviewClass
  # CRD cannot create the class: its NOTES say so, and the next upgrade creates it.
  if kubectl get previewclass "$class" >/dev/null 2>&1; then
    fail "the install that created the CRDs created the PreviewClass $class too (the chart's comment is wrong)"
  fi
  grep -q "The default class $class is NOT created yet" <<<"$notes" ||
    fail "the NOTES of the install that created the CRDs do not say the class comes with the next upgrade: $notes"
  log "helm upgrade --reuse-values creates the default class, once the API server serves the kind"
  notes=$(upgrade)
fi
class_is_the_releases "install"
[[ -z $(class_field .spec.tenants) ]] || fail "the default class must admit nobody by default, has tenants $(class_field .spec.tenants)"
for want in "Default class: $class" "It admits NOBODY yet" "kubectl edit previewclass $class" "RepositoryNotAllowed"; do
  grep -qF -- "$want" <<<"$notes" || fail "the NOTES lack: $want"
done
# The non-default class passes the API server's validation too (CEL rules, strict fields).
render "${class_kind[@]}" -f hack/chart/values-nondefault.yaml -s templates/previewclass.yaml |
  kubectl apply --dry-run=server --validate=strict -f - >/dev/null || fail "the API server refuses the non-default class"

log "helm uninstall keeps the CRDs, the default class and the PreviewEnvironments; install again adopts them"
kubectl create namespace "$probe_ns" >/dev/null
# No operator runs during the chart checks: the preview stays as is, with the finalizer the
# chart's finalizer policy sets as it is created. Right after the CRDs are created the API server
# may not serve the kind yet (503 "There can be a delay..."): retried for a while.
for _ in $(seq 1 100); do
  kubectl apply -n "$probe_ns" -f examples/preview-minimal.yaml >/dev/null 2>&1 && break
  sleep 0.3
done
kubectl apply -n "$probe_ns" -f examples/preview-minimal.yaml >/dev/null
if kubectl api-resources --api-group=admissionregistration.k8s.io -o name | grep -x mutatingadmissionpolicies.admissionregistration.k8s.io >/dev/null; then
  finalizers=$(kubectl get previewenv -n "$probe_ns" docs-pr-42 -o jsonpath='{.metadata.finalizers}')
  [[ $finalizers == *'"preview.dev/teardown"'* ]] ||
    fail "the finalizer policy did not set preview.dev/teardown on a new preview: finalizers $finalizers"
fi
quiet helm uninstall "$release" -n "$namespace" --wait --timeout 2m >/dev/null
for crd in "${crd_names[@]}"; do
  kubectl get crd "$crd" >/dev/null 2>&1 || fail "helm uninstall deleted the CRD $crd"
done
kubectl get previewclass "$class" >/dev/null 2>&1 || fail "helm uninstall deleted the PreviewClass $class"
kubectl get namespace "$namespace-platform-secrets" >/dev/null 2>&1 ||
  fail "helm uninstall deleted the platform Secrets namespace $namespace-platform-secrets (and the Secrets in it)"
kubectl get previewenv -n "$probe_ns" docs-pr-42 >/dev/null 2>&1 || fail "helm uninstall deleted a PreviewEnvironment"
install >/dev/null
class_is_the_releases "reinstall"
kubectl get previewenv -n "$probe_ns" docs-pr-42 >/dev/null 2>&1 || fail "reinstalling lost a PreviewEnvironment"
# No operator will tear it down: its finalizer is released by hand (as docs say to when the
# operator is gone for good), or the namespace could not go.
kubectl patch previewenv -n "$probe_ns" docs-pr-42 --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null
kubectl delete namespace "$probe_ns" --timeout=60s >/dev/null

log "helm upgrade onto the rig: values reach the default class, kubectl edits of other fields stay"
kubectl patch previewclass "$class" --type=merge -p '{"spec":{"allowedRegistries":["registry.example.com/"]}}' >/dev/null
notes=$(upgrade --set workers=8 --set "defaultClass.tenants[0].namespaces[0]=$tenant_ns" \
  --set 'defaultClass.tenants[0].repositories[0]=acme/*' --set defaultClass.limits.activePerNamespace=3)
kubectl -n "$namespace" rollout status "deployment/$release" --timeout=60s >/dev/null
workers=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_WORKERS")].value}')
[[ $workers == 8 ]] || fail "upgrade did not apply workers=8 (got '$workers')"
wait_crds
class_is_the_releases "upgrade"
got=$(class_field '.spec.tenants[0].namespaces[0]')/$(class_field '.spec.tenants[0].repositories[0]')/$(class_field .spec.limits.activePerNamespace)
[[ $got == "$tenant_ns/acme/*/3" ]] || fail "upgrade did not bring the values' tenant and limit to the class (got $got)"
[[ $(class_field '.spec.allowedRegistries[0]') == registry.example.com/ ]] ||
  fail "upgrade dropped a field edited with kubectl that the values do not set"
grep -q "Tenants: 1 entry" <<<"$notes" || fail "the NOTES do not count the tenant: $notes"

log "defaultClass.enabled=false: the class stays (keep) until deleted; the cluster tests bring their own"
notes=$(upgrade --set defaultClass.enabled=false)
class_field .metadata.name >/dev/null || fail "defaultClass.enabled=false deleted the kept class $class"
grep -q "defaultClass.enabled=false" <<<"$notes" || fail "the NOTES do not mention defaultClass.enabled=false: $notes"
kubectl delete previewclass "$class" --wait --timeout=60s >/dev/null
# hack/test.sh applies hack/classes/test.yaml next: the cluster tests' only default class.
others=$(kubectl get previewclasses -o jsonpath='{range .items[?(@.metadata.annotations.preview\.dev/is-default-class=="true")]}{.metadata.name} {end}')
for other in $others; do
  [[ $other == tests ]] || fail "default PreviewClass $other is left on the rig: the cluster tests need theirs to be the only one"
done

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

log "admission policies: the operator's ServiceAccount writes only where it manages (impersonation)"
# The API server type-checks each policy against the kinds it matches: no warnings (a typo in a
# field name would otherwise only show as a denial at run time, failurePolicy Fail).
mapfile -t policies < <(kubectl get validatingadmissionpolicies -l "app.kubernetes.io/instance=$release" -o name)
((${#policies[@]} == 7)) || fail "expected the release's 7 ValidatingAdmissionPolicies, found: ${policies[*]}"
for policy in "${policies[@]}"; do
  deadline=$((SECONDS + 30))
  while :; do
    generations=$(kubectl get "$policy" -o jsonpath='{.status.observedGeneration}/{.metadata.generation}')
    [[ ${generations%/*} == "${generations#*/}" ]] && break
    ((SECONDS < deadline)) || fail "$policy: the API server never type-checked it"
    sleep 0.2
  done
  warnings=$(kubectl get "$policy" -o jsonpath='{.status.typeChecking.expressionWarnings}')
  [[ -z $warnings ]] || fail "$policy: type-checking warnings: $warnings"
done
sa_name=$(kubectl -n "$namespace" get "deployment/$release" -o jsonpath='{.spec.template.spec.serviceAccountName}')
as_operator=(--as="system:serviceaccount:$namespace:$sa_name" --as-group=system:serviceaccounts
  --as-group="system:serviceaccounts:$namespace" --as-group=system:authenticated)
# The tenant: preview-chart-ci has edit in $tenant_ns (above), and nothing else.
as_tenant=(--as=preview-chart-ci --as-group=system:authenticated)
# refused <what> <expected message part> <kubectl args...>: kubectl must fail with that message.
# Policies and bindings take effect a moment after they are created (the API server's informers):
# retried until a deadline, so the first refusal of each policy doubles as the wait for it.
refused() {
  local what=$1 want=$2 out deadline=$((SECONDS + 30))
  shift 2
  while :; do
    if ! out=$(kubectl "$@" 2>&1) && grep -qF -- "$want" <<<"$out"; then
      return 0
    fi
    ((SECONDS < deadline)) || fail "$what: expected a refusal saying '$want', got: $out"
    sleep 0.2
  done
}
# allowed <what> <kubectl args...>: kubectl must succeed (asked after the policy concerned has
# been seen refusing, so it is in effect).
allowed() {
  local what=$1 out
  shift
  out=$(kubectl "$@" 2>&1) || fail "$what: expected it to be allowed, got: $out"
}
# deployment|configmap <name> <labels JSON> [annotations JSON]: a manifest file, path printed.
deployment() {
  cat >"$work/deployment-$1.json" <<JSON
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "$1", "labels": $2},
 "spec": {"selector": {"matchLabels": {"app": "$1"}},
  "template": {"metadata": {"labels": {"app": "$1"}},
   "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}}}
JSON
  echo "$work/deployment-$1.json"
}
configmap() {
  local annotations=${3:-}
  [[ -n $annotations ]] || annotations='{}'
  cat >"$work/configmap-$1.json" <<JSON
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "$1", "labels": $2, "annotations": $annotations},
 "data": {"key": "value"}}
JSON
  echo "$work/configmap-$1.json"
}
not_managed="preview-operator may only write in namespaces it manages; namespace $tenant_ns is not labelled app.kubernetes.io/managed-by=preview-operator"
not_own="preview-operator may only change or delete namespaces it manages; namespace"
reserved="are reserved to preview-operator"
owned='{"app.kubernetes.io/managed-by": "preview-operator", "preview.dev/owner-uid": "0000"}'

# A namespace the operator manages (an admin, system:masters, may label one) and an object in
# each namespace for the DELETE and UPDATE checks.
kubectl create namespace "$managed_ns" >/dev/null
kubectl label namespace "$managed_ns" app.kubernetes.io/managed-by=preview-operator >/dev/null
kubectl create -n "$tenant_ns" -f "$(deployment existing '{}')" >/dev/null
kubectl create -n "$managed_ns" -f "$(deployment existing "$owned")" >/dev/null

# Each policy in effect (retried until a deadline), and each one's first check: (a) the operator
# may not create a Deployment in a tenant namespace, (c) nor delete that namespace, (d) and a
# tenant with edit in its namespace may not label its objects as the operator's.
refused "operator SA creates a Deployment in the tenant namespace" "$not_managed (refused: CREATE deployments web)" \
  "${as_operator[@]}" create -n "$tenant_ns" --dry-run=server -f "$(deployment web "$owned")"
refused "operator SA deletes the tenant namespace" "$not_own $tenant_ns is not labelled" \
  "${as_operator[@]}" delete namespace "$tenant_ns" --dry-run=server
refused "tenant creates a ConfigMap labelled managed-by=preview-operator" \
  "preview-chart-ci may not set label app.kubernetes.io/managed-by=preview-operator on configmaps forged in namespace $tenant_ns" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server \
  -f "$(configmap forged '{"app.kubernetes.io/managed-by": "preview-operator"}')"

# (a) In a namespace it does not manage, the operator may not create, change or delete anything.
# (Server-side apply, as the operator writes: an UPDATE of the existing object, without a GET,
# which its RBAC does not grant for Deployments.)
refused "operator SA applies to a Deployment in the tenant namespace" "$not_managed (refused: UPDATE deployments existing)" \
  "${as_operator[@]}" apply -n "$tenant_ns" --server-side --force-conflicts --field-manager=preview-operator \
  --dry-run=server -f "$(deployment existing "$owned")"
refused "operator SA deletes a Deployment in the tenant namespace" "$not_managed (refused: DELETE deployments existing)" \
  "${as_operator[@]}" delete deployment existing -n "$tenant_ns" --dry-run=server
refused "operator SA creates a Job in default" "namespace default is not labelled" \
  "${as_operator[@]}" create job probe -n default --image=registry.example.com/app:1 --dry-run=server
# The kinds templates brought: dependency StatefulSets and ConfigMap copies.
refused "operator SA creates a ConfigMap in the tenant namespace" "$not_managed (refused: CREATE configmaps probe)" \
  "${as_operator[@]}" create configmap probe -n "$tenant_ns" --from-literal=key=value --dry-run=server
kubectl create deployment db --image=registry.example.com/db:1 --dry-run=client -o json |
  python3 -c 'import json, sys; d = json.load(sys.stdin); d["kind"] = "StatefulSet"; d["spec"].pop("strategy", None); print(json.dumps(d))' \
  >"$work/statefulset.json"
refused "operator SA creates a StatefulSet in the tenant namespace" "$not_managed (refused: CREATE statefulsets db)" \
  "${as_operator[@]}" create -n "$tenant_ns" --dry-run=server -f "$work/statefulset.json"
allowed "operator SA creates a StatefulSet in a managed namespace" \
  "${as_operator[@]}" create -n "$managed_ns" --dry-run=server -f "$work/statefulset.json"
# (b) In a namespace it manages, it may (its own labels included).
allowed "operator SA creates a Deployment in a managed namespace" \
  "${as_operator[@]}" create -n "$managed_ns" --dry-run=server -f "$(deployment web "$owned")"
allowed "operator SA deletes a Deployment in a managed namespace" \
  "${as_operator[@]}" delete deployment existing -n "$managed_ns" --dry-run=server
# Events are not covered: the operator reports on PreviewEnvironments in tenant namespaces.
cat >"$work/event.json" <<JSON
{"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "preview-chart-probe"},
 "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "preview.dev/operator",
 "reportingInstance": "probe", "action": "Reconcile", "reason": "Probe", "type": "Normal",
 "regarding": {"apiVersion": "preview.dev/v1alpha1", "kind": "PreviewEnvironment", "namespace": "$tenant_ns",
  "name": "docs-pr-42"}, "note": "probe"}
JSON
allowed "operator SA creates an Event in the tenant namespace" \
  "${as_operator[@]}" create -n "$tenant_ns" --dry-run=server -f "$work/event.json"

# (c) Namespaces: only those it manages (the stored labels count, so it cannot label its way in).
refused "operator SA labels the tenant namespace as managed" "$not_own $tenant_ns is not labelled" \
  "${as_operator[@]}" label namespace "$tenant_ns" app.kubernetes.io/managed-by=preview-operator --dry-run=server
refused "operator SA creates an unlabelled namespace" \
  "may only create namespaces labelled app.kubernetes.io/managed-by=preview-operator; namespace preview-chart-new is not" \
  "${as_operator[@]}" create namespace preview-chart-new --dry-run=server
kubectl create namespace preview-chart-new --dry-run=client -o json |
  kubectl label --local -o json -f - app.kubernetes.io/managed-by=preview-operator >"$work/namespace-new.json"
allowed "operator SA creates a managed namespace" "${as_operator[@]}" create --dry-run=server -f "$work/namespace-new.json"
allowed "operator SA labels a managed namespace" \
  "${as_operator[@]}" label namespace "$managed_ns" preview.dev/owner-uid=0000 --dry-run=server
allowed "operator SA deletes a managed namespace" "${as_operator[@]}" delete namespace "$managed_ns" --dry-run=server

log "admission policies: nobody else sets the operator's labels and annotations (impersonation)"
# (d) A tenant with edit in its namespace: not on its objects...
refused "tenant creates a ConfigMap labelled preview.dev/owner-uid" "may not set label preview.dev/owner-uid=0000" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(configmap forged '{"preview.dev/owner-uid": "0000"}')"
refused "tenant creates a ConfigMap annotated preview.dev/" "may not set annotation preview.dev/owner" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(configmap forged '{}' '{"preview.dev/owner": "a/b"}')"
refused "tenant creates a Deployment labelled managed-by=preview-operator" "$reserved" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(deployment forged '{"app.kubernetes.io/managed-by": "preview-operator"}')"
refused "tenant labels its Deployment preview.dev/owner-uid" "may not set label preview.dev/owner-uid=0000" \
  "${as_tenant[@]}" label deployment existing -n "$tenant_ns" preview.dev/owner-uid=0000 --dry-run=server
# ... while other labels, and values already there, are fine.
allowed "tenant creates a plain ConfigMap" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(configmap plain '{"app.kubernetes.io/managed-by": "Helm"}')"
allowed "tenant creates a plain Deployment" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(deployment plain '{"app": "web"}')"
kubectl create -n "$tenant_ns" -f "$(configmap labelled '{"preview.dev/owner-uid": "0000"}')" >/dev/null
allowed "tenant edits another field of an object carrying preview.dev/ labels" \
  "${as_tenant[@]}" patch configmap labelled -n "$tenant_ns" --dry-run=server --type=merge -p '{"data":{"key":"new"}}'
allowed "tenant removes a preview.dev/ label" \
  "${as_tenant[@]}" label configmap labelled -n "$tenant_ns" preview.dev/owner-uid- --dry-run=server
refused "tenant changes a preview.dev/ label" "may not set label preview.dev/owner-uid=1111" \
  "${as_tenant[@]}" label configmap labelled -n "$tenant_ns" preview.dev/owner-uid=1111 --overwrite --dry-run=server
# PreviewEnvironments are not covered: CI annotates them (rerun-tests), tests label them (shard).
kubectl label --local -o json -f examples/preview-minimal.yaml preview.dev/shard=probe |
  kubectl annotate --local -o json -f - preview.dev/rerun-tests=probe >"$work/preview.json"
allowed "tenant creates a PreviewEnvironment labelled and annotated preview.dev/" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$work/preview.json"
# (e) ... nor on its namespace, even with RBAC to patch and create namespaces.
kubectl create clusterrole preview-chart-namespace-editor --verb=get,create,patch --resource=namespaces >/dev/null
kubectl create clusterrolebinding preview-chart-namespace-editor --clusterrole=preview-chart-namespace-editor \
  --user=preview-chart-ci >/dev/null
refused "tenant labels its namespace managed-by=preview-operator" \
  "preview-chart-ci may not set label app.kubernetes.io/managed-by=preview-operator on namespaces $tenant_ns:" \
  "${as_tenant[@]}" label namespace "$tenant_ns" app.kubernetes.io/managed-by=preview-operator --dry-run=server
refused "tenant labels its namespace preview.dev/owner-uid" "may not set label preview.dev/owner-uid=0000" \
  "${as_tenant[@]}" label namespace "$tenant_ns" preview.dev/owner-uid=0000 --dry-run=server
refused "tenant creates a namespace labelled managed-by=preview-operator" "$reserved" \
  "${as_tenant[@]}" create --dry-run=server -f "$work/namespace-new.json"
allowed "tenant labels its namespace otherwise" \
  "${as_tenant[@]}" label namespace "$tenant_ns" team=shop --dry-run=server
# (f) Kubernetes' controllers by name only: the StatefulSet controller labels a dependency's
# claims like its StatefulSet; a controller copying a tenant's template (a CronJob's Jobs) may not.
kubectl create -n "$managed_ns" --dry-run=client -o json -f - >"$work/claim.json" <<JSON
{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
 "metadata": {"name": "data-db-0", "labels": {"preview.dev/component": "dependency", "preview.dev/name": "db"}},
 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
JSON
allowed "the StatefulSet controller creates a dependency's claim with its preview.dev/ labels" \
  --as=system:serviceaccount:kube-system:statefulset-controller create -n "$managed_ns" --dry-run=server -f "$work/claim.json"
kubectl create job laundered -n "$tenant_ns" --image=registry.example.com/app:1 --dry-run=client -o json |
  kubectl label --local -o json -f - preview.dev/owner-uid=0000 >"$work/job.json"
refused "the CronJob controller creates a Job labelled preview.dev/owner-uid from a tenant's template" \
  "system:serviceaccount:kube-system:cronjob-controller may not set label preview.dev/owner-uid=0000" \
  --as=system:serviceaccount:kube-system:cronjob-controller create -n "$tenant_ns" --dry-run=server -f "$work/job.json"

log "admission policies: the operator binds only view, its log reader and the Flux applier (impersonation)"
# RBAC alone lets it bind any role whose permissions it holds, its own ClusterRole included.
refused "operator SA binds its own ClusterRole in a managed namespace" \
  "preview-operator may bind only the ClusterRoles view, $release-log-reader, $release-flux-applier; RoleBinding grab in namespace $managed_ns refers to ClusterRole $release" \
  "${as_operator[@]}" create rolebinding grab -n "$managed_ns" --clusterrole="$release" \
  --serviceaccount="$managed_ns:default" --dry-run=server
refused "operator SA binds the log reader to another ServiceAccount" \
  "may bind $release-log-reader only to its own ServiceAccount $namespace/$sa_name" \
  "${as_operator[@]}" create rolebinding logs -n "$managed_ns" --clusterrole="$release-log-reader" \
  --serviceaccount="$managed_ns:default" --dry-run=server
refused "operator SA grants view to its own ServiceAccount" "never to a ServiceAccount of its own namespace" \
  "${as_operator[@]}" create rolebinding viewers -n "$managed_ns" --clusterrole=view \
  --serviceaccount="$namespace:$sa_name" --dry-run=server
allowed "operator SA grants view to a class's viewers" \
  "${as_operator[@]}" create rolebinding viewers -n "$managed_ns" --clusterrole=view --group=shop-developers \
  --user=someone --serviceaccount=team-shop:ci --dry-run=server

log "admission policies: pods use the platform's Secret copies only to pull images"
# The operator names the copies on the preview namespace (an admin may annotate it here); a
# tenant may not.
kubectl annotate namespace "$managed_ns" preview.dev/platform-secrets=registry,wildcard-tls >/dev/null
refused "tenant annotates its namespace preview.dev/platform-secrets" "may not set annotation preview.dev/platform-secrets" \
  "${as_tenant[@]}" annotate namespace "$tenant_ns" preview.dev/platform-secrets=none --dry-run=server
# copy_pod <name> <Secret> <container fields> [pod spec fields]: a pod manifest, path printed.
copy_pod() {
  cat >"$work/pod-$1.json" <<JSON
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "$1"},
 "spec": {"imagePullSecrets": [{"name": "registry"}],
  "containers": [{"name": "app", "image": "registry.example.com/app:1" ${3:+, $3}}] ${4:+, $4}}}
JSON
  sed -i "s/SECRET/$2/g" "$work/pod-$1.json"
  echo "$work/pod-$1.json"
}
by_key='"env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "SECRET", "key": "tls.key"}}}]'
by_env_from='"envFrom": [{"secretRef": {"name": "SECRET"}}]'
by_volume='"volumeMounts": [{"name": "s", "mountPath": "/s"}]'
volume='"volumes": [{"name": "s", "secret": {"secretName": "SECRET"}}]'
projected='"volumes": [{"name": "s", "projected": {"sources": [{"secret": {"name": "SECRET"}}]}}]'
copy="uses Secret wildcard-tls (in env secretKeyRef, envFrom or a volume): it is the platform's"
refused "a pod reads the TLS copy by secretKeyRef" "pod key in preview namespace $managed_ns $copy" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod key wildcard-tls "$by_key")"
refused "a pod reads the TLS copy by envFrom" "$copy" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod from wildcard-tls "$by_env_from")"
refused "a pod mounts the TLS copy" "$copy" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod volume wildcard-tls "$by_volume" "$volume")"
refused "a pod mounts the pull secret's copy in a projected volume" "uses Secret registry" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod projected registry "$by_volume" "$projected")"
# The same pods naming a team's own copy, and the pull secret as an image pull secret, pass.
allowed "a pod reads a team copy by secretKeyRef" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod key team-db "$by_key")"
allowed "a pod reads a team copy by envFrom" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod from team-db "$by_env_from")"
allowed "a pod mounts a team copy" \
  create -n "$managed_ns" --dry-run=server -f "$(copy_pod volume team-db "$by_volume" "$volume")"
# Outside preview namespaces the policy does not apply.
allowed "a tenant pod reads its own wildcard-tls Secret" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(copy_pod key wildcard-tls "$by_key")"

log "admission policies: no tenant Ingress or HTTPRoute under a class's base domain"
kubectl create -f - >/dev/null <<JSON
{"apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass", "metadata": {"name": "preview-chart-hosts"},
 "spec": {"ingress": {"baseDomain": "preview-chart.example.com"}}}
JSON
preview_host=web-pr-shop-1-0123456789abcdef.preview-chart.example.com
claims="claims $preview_host, at or under preview-chart.example.com, the base domain of PreviewClass preview-chart-hosts"
refused "tenant Ingress for a preview's host" "Ingress squat in namespace $tenant_ns $claims" \
  "${as_tenant[@]}" create ingress squat -n "$tenant_ns" --rule="$preview_host/=web:80" --dry-run=server
refused "tenant Ingress for the wildcard" "claims *.preview-chart.example.com" \
  "${as_tenant[@]}" create ingress squat -n "$tenant_ns" --rule="*.preview-chart.example.com/=web:80" --dry-run=server
allowed "tenant Ingress for another host" \
  "${as_tenant[@]}" create ingress shop -n "$tenant_ns" --rule="shop.example.com/=web:80" --dry-run=server
allowed "tenant Ingress for a host that only ends like the domain" \
  "${as_tenant[@]}" create ingress shop -n "$tenant_ns" --rule="notpreview-chart.example.com/=web:80" --dry-run=server
allowed "the operator's Ingress for a preview's host in a namespace it manages" \
  "${as_operator[@]}" create ingress web -n "$managed_ns" --rule="$preview_host/=web:80" --dry-run=server
# HTTPRoutes: a stand-in CRD when the rig has no Gateway API (the policy matches by name).
if ! kubectl get crd httproutes.gateway.networking.k8s.io >/dev/null 2>&1; then
  kubectl create -f - >/dev/null <<JSON
{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "httproutes.gateway.networking.k8s.io", "labels": {"preview.dev/chart-test-stand-in": "true"},
  "annotations": {"api-approved.kubernetes.io": "unapproved, stand-in for the chart checks"}},
 "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
  "names": {"plural": "httproutes", "singular": "httproute", "kind": "HTTPRoute", "listKind": "HTTPRouteList"},
  "versions": [{"name": "v1", "served": true, "storage": true,
   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}
JSON
  kubectl wait --for=condition=Established --timeout=60s crd/httproutes.gateway.networking.k8s.io >/dev/null
fi
kubectl create clusterrole preview-chart-routes --verb=create --resource=httproutes.gateway.networking.k8s.io >/dev/null
kubectl create rolebinding preview-chart-routes -n "$tenant_ns" --clusterrole=preview-chart-routes --user=preview-chart-ci >/dev/null
route() {
  cat >"$work/route-$1.json" <<JSON
{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "$1"},
 "spec": {"hostnames": ["$2"], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}
JSON
  echo "$work/route-$1.json"
}
refused "tenant HTTPRoute for a preview's host" "HTTPRoute squat in namespace $tenant_ns $claims" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(route squat "$preview_host")"
allowed "tenant HTTPRoute for another host" \
  "${as_tenant[@]}" create -n "$tenant_ns" --dry-run=server -f "$(route shop shop.example.com)"
kubectl delete previewclass preview-chart-hosts >/dev/null

log "Secrets and ConfigMaps: the operator reads them only where a team opted in (impersonation)"
# The names the operator prints in its message for a namespace that has not opted in.
reader_role=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_SOURCE_READER_ROLE")].value}')
[[ -n $reader_role ]] || fail "the Deployment does not set PREVIEW_OPERATOR_SOURCE_READER_ROLE"
kubectl get clusterrole "$reader_role" >/dev/null || fail "PREVIEW_OPERATOR_SOURCE_READER_ROLE names $reader_role, which does not exist"
# operator_can <verb> <resource> <namespace, or - for every namespace>: "yes" or "no".
operator_can() {
  local where=(-n "$3")
  [[ $3 == - ]] && where=(--all-namespaces)
  kubectl auth can-i "${as_operator[@]}" "$1" "$2" "${where[@]}" 2>/dev/null || true
}
# expect_operator <yes|no> <namespace|-> <verb>...: for secrets and configmaps. RBAC changes
# reach the authorizer a moment after they are made: retried until a deadline.
expect_operator() {
  local want=$1 ns=$2 verb resource got deadline=$((SECONDS + 30))
  shift 2
  for verb in "$@"; do
    for resource in secrets configmaps; do
      while got=$(operator_can "$verb" "$resource" "$ns") && [[ $got != "$want" ]]; do
        ((SECONDS < deadline)) ||
          fail "operator SA can-i $verb $resource (namespace ${ns/#-/every namespace}): got '$got', want '$want'"
        sleep 0.2
      done
    done
  done
}
# Never cluster-wide, never in a tenant namespace that did not opt in.
expect_operator no - get list watch
expect_operator no "$tenant_ns" get list watch
# Not its own namespace: its credentials (GitHub App key, tokens) are there, mounted as files.
expect_operator no "$namespace" get list watch
# The platform Secrets namespace: the class's Secrets (image pull, TLS) are read there; no ConfigMaps.
platform_ns=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE")].value}')
[[ $platform_ns == "$namespace-platform-secrets" ]] ||
  fail "PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE is '$platform_ns', want $namespace-platform-secrets"
kubectl get namespace "$platform_ns" >/dev/null || fail "the platform Secrets namespace $platform_ns does not exist"
for verb in get list watch; do
  [[ $(operator_can "$verb" secrets "$platform_ns") == yes ]] || fail "operator SA cannot $verb Secrets in $platform_ns"
  [[ $(operator_can "$verb" configmaps "$platform_ns") == no ]] || fail "operator SA may $verb ConfigMaps in $platform_ns"
done
# A team opts in with the RoleBinding the README and the operator's message document. Its admin
# may create it (admin reads those Secrets anyway, so binding the role escalates nothing); edit
# may not (no RoleBindings).
kubectl create namespace "$optin_ns" >/dev/null
kubectl create rolebinding team-admin -n "$optin_ns" --clusterrole=admin --user=preview-chart-team-admin >/dev/null
kubectl create rolebinding ci -n "$optin_ns" --clusterrole=edit --user=preview-chart-ci >/dev/null
expect_operator no "$optin_ns" get list watch
opt_in=(create rolebinding preview-operator-sources --namespace "$optin_ns" --clusterrole="$reader_role"
  --serviceaccount="$namespace:$sa_name")
refused "a tenant with edit binds the source reader" "forbidden" \
  "${as_tenant[@]}" "${opt_in[@]}" --dry-run=server
allowed "a tenant admin binds the source reader in its namespace" \
  --as=preview-chart-team-admin --as-group=system:authenticated "${opt_in[@]}"
expect_operator yes "$optin_ns" get list watch
# ... in that namespace only: still no reads anywhere else.
expect_operator no - get list watch
expect_operator no "$tenant_ns" get list watch
# Deleting the RoleBinding withdraws it.
kubectl delete rolebinding preview-operator-sources -n "$optin_ns" >/dev/null
expect_operator no "$optin_ns" get list watch
kubectl delete namespace "$optin_ns" --wait=false >/dev/null

log "test logs: the operator reads pods' logs in preview namespaces only, and only reads them (impersonation)"
# can_logs <namespace> <yes|no>: the operator SA's get pods/log there (retried: RBAC changes
# reach the authorizer a moment later).
can_logs() {
  local got deadline=$((SECONDS + 30))
  while got=$(kubectl auth can-i "${as_operator[@]}" get pods --subresource=log -n "$1" 2>/dev/null || true) &&
    [[ $got != "$2" ]]; do
    ((SECONDS < deadline)) || fail "operator SA can-i get pods/log in $1: got '$got', want '$2'"
    sleep 0.2
  done
}
# Not cluster-wide: nowhere until it binds the log reader in a preview namespace, as
# controller/build.rs log_reader() does (the name the Deployment tells it).
log_role=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_LOG_READER_ROLE")].value}')
[[ $log_role == "$release-log-reader" ]] || fail "PREVIEW_OPERATOR_LOG_READER_ROLE is '$log_role', want $release-log-reader"
can_logs "$tenant_ns" no
can_logs "$managed_ns" no
allowed "operator SA binds the log reader to itself in a managed namespace" \
  "${as_operator[@]}" create rolebinding preview-operator-logs -n "$managed_ns" --clusterrole="$log_role" \
  --serviceaccount="$namespace:$sa_name"
can_logs "$managed_ns" yes
can_logs "$tenant_ns" no
for sub in exec attach portforward; do
  [[ $(kubectl auth can-i "${as_operator[@]}" create pods --subresource="$sub" -n "$tenant_ns" 2>/dev/null) == no ]] ||
    fail "operator SA may create pods/$sub"
done
log "Flux delivery: the operator binds the applier role only to preview-applier (impersonation)"
applier_role=$(kubectl -n "$namespace" get "deployment/$release" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PREVIEW_OPERATOR_FLUX_APPLIER_ROLE")].value}')
[[ $applier_role == "$release-flux-applier" ]] ||
  fail "PREVIEW_OPERATOR_FLUX_APPLIER_ROLE is '$applier_role', want $release-flux-applier"
# The installed role is edit minus the hardening and RBAC: everything it grants, this API
# server's own edit role grants too (aggregated above, so complete by now).
kubectl get clusterrole edit -o json >"$work/edit.json"
kubectl -n "$namespace" get "clusterrole/$release" "clusterrole/$applier_role" "deployment/$release" -o yaml |
  hack/chart/flux-applier.py --release "$release" --role "$applier_role" --edit "$work/edit.json" ||
  fail "the installed $applier_role is not edit minus the hardening, or the operator's Flux rights are wrong"
# The operator creates preview-applier, and binds the role to it, where it manages only.
refused "operator SA creates a ServiceAccount in the tenant namespace" \
  "$not_managed (refused: CREATE serviceaccounts preview-applier)" \
  "${as_operator[@]}" create serviceaccount preview-applier -n "$tenant_ns" --dry-run=server
allowed "operator SA creates preview-applier in a managed namespace" \
  "${as_operator[@]}" create serviceaccount preview-applier -n "$managed_ns"
bind_applier=(create rolebinding preview-applier -n "$managed_ns" --clusterrole="$applier_role")
only_applier="preview-operator may bind $applier_role only to the ServiceAccount preview-applier of the RoleBinding's own namespace, alone; RoleBinding preview-applier in namespace $managed_ns names"
refused "operator SA binds the applier role to the namespace's default ServiceAccount" \
  "$only_applier ServiceAccount $managed_ns/default" \
  "${as_operator[@]}" "${bind_applier[@]}" --serviceaccount="$managed_ns:default" --dry-run=server
refused "operator SA binds the applier role to preview-applier of another namespace" \
  "$only_applier ServiceAccount $tenant_ns/preview-applier" \
  "${as_operator[@]}" "${bind_applier[@]}" --serviceaccount="$tenant_ns:preview-applier" --dry-run=server
refused "operator SA binds the applier role to a user named like preview-applier" \
  "$only_applier User /system:serviceaccount:$managed_ns:preview-applier" \
  "${as_operator[@]}" "${bind_applier[@]}" --user="system:serviceaccount:$managed_ns:preview-applier" --dry-run=server
refused "operator SA binds the applier role to preview-applier and a group" "$only_applier" \
  "${as_operator[@]}" "${bind_applier[@]}" --serviceaccount="$managed_ns:preview-applier" --group=shop-developers \
  --dry-run=server
allowed "operator SA binds the applier role to preview-applier in its namespace" \
  "${as_operator[@]}" "${bind_applier[@]}" --serviceaccount="$managed_ns:preview-applier"
# The Flux kinds: a stand-in CRD when the rig has no Flux (the policy matches by name).
if ! kubectl get crd helmreleases.helm.toolkit.fluxcd.io >/dev/null 2>&1; then
  kubectl create -f - >/dev/null <<JSON
{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "helmreleases.helm.toolkit.fluxcd.io", "labels": {"preview.dev/chart-test-stand-in": "true"}},
 "spec": {"group": "helm.toolkit.fluxcd.io", "scope": "Namespaced",
  "names": {"plural": "helmreleases", "singular": "helmrelease", "kind": "HelmRelease", "listKind": "HelmReleaseList"},
  "versions": [{"name": "v2", "served": true, "storage": true,
   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}
JSON
  kubectl wait --for=condition=Established --timeout=60s crd/helmreleases.helm.toolkit.fluxcd.io >/dev/null
fi
cat >"$work/helmrelease.json" <<JSON
{"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "web"},
 "spec": {"interval": "1h", "serviceAccountName": "preview-applier",
  "chart": {"spec": {"chart": "web", "sourceRef": {"kind": "HelmRepository", "name": "chart-web"}}}}}
JSON
refused "operator SA creates a HelmRelease in the tenant namespace" "$not_managed (refused: CREATE helmreleases web)" \
  "${as_operator[@]}" create -n "$tenant_ns" --dry-run=server -f "$work/helmrelease.json"
allowed "operator SA creates a HelmRelease in a managed namespace" \
  "${as_operator[@]}" create -n "$managed_ns" --dry-run=server -f "$work/helmrelease.json"

log "Flux delivery: what a chart may apply as preview-applier (impersonation)"
# What the operator writes on a preview namespace that delivers through Flux (the platform
# Secret copies are annotated above).
flux_host=$managed_ns.preview-chart.example.com
kubectl annotate namespace "$managed_ns" --overwrite preview.dev/allowed-registries=registry.example.com/acme/,ghcr.io/acme \
  "preview.dev/host=$flux_host" >/dev/null
as_applier=(--as="system:serviceaccount:$managed_ns:preview-applier" --as-group=system:serviceaccounts
  --as-group="system:serviceaccounts:$managed_ns" --as-group=system:authenticated)
# applier_can <yes|no> <can-i args...>: retried (RBAC changes reach the authorizer a moment later).
applier_can() {
  local want=$1 got deadline=$((SECONDS + 30))
  shift
  while got=$(kubectl auth can-i "${as_applier[@]}" "$@" 2>/dev/null || true) && [[ $got != "$want" ]]; do
    ((SECONDS < deadline)) || fail "preview-applier can-i $*: got '$got', want '$want'"
    sleep 0.2
  done
}
applier_can yes create deployments.apps -n "$managed_ns"
# RBAC: its namespace only, nothing of the hardening, no RBAC, no tokens, no other identity.
applier_can no create deployments.apps -n "$tenant_ns"
for kind in networkpolicies.networking.k8s.io resourcequotas limitranges roles.rbac.authorization.k8s.io \
  rolebindings.rbac.authorization.k8s.io helmreleases.helm.toolkit.fluxcd.io; do
  applier_can no create "$kind" -n "$managed_ns"
done
applier_can no create clusterroles.rbac.authorization.k8s.io
applier_can no create clusterrolebindings.rbac.authorization.k8s.io
applier_can no impersonate serviceaccounts -n "$managed_ns"
applier_can no create serviceaccounts --subresource=token -n "$managed_ns"
for sub in exec attach portforward; do
  applier_can no create pods --subresource="$sub" -n "$managed_ns"
done
cat >"$work/networkpolicy.json" <<JSON
{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all"},
 "spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}}
JSON
refused "a chart creates a NetworkPolicy" \
  "User \"system:serviceaccount:$managed_ns:preview-applier\" cannot create resource \"networkpolicies\"" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$work/networkpolicy.json"
refused "a chart creates a ClusterRole" "cannot create resource \"clusterroles\"" \
  "${as_applier[@]}" create clusterrole grab --verb='*' --resource='*' --dry-run=server
refused "a chart creates a RoleBinding" "cannot create resource \"rolebindings\"" \
  "${as_applier[@]}" create rolebinding grab -n "$managed_ns" --clusterrole=admin \
  --serviceaccount="$managed_ns:default" --dry-run=server
# workload <kind> <name> <image> [pod spec fields]: a manifest with that pod template, path printed.
workload() {
  local template="{\"metadata\": {\"labels\": {\"app\": \"$2\"}},
   \"spec\": {\"imagePullSecrets\": [{\"name\": \"registry\"}], \"containers\": [{\"name\": \"app\", \"image\": \"$3\"}] ${4:+, $4}}}"
  case $1 in
    Deployment) echo "{\"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"metadata\": {\"name\": \"$2\"},
      \"spec\": {\"selector\": {\"matchLabels\": {\"app\": \"$2\"}}, \"template\": $template}}" ;;
    CronJob) echo "{\"apiVersion\": \"batch/v1\", \"kind\": \"CronJob\", \"metadata\": {\"name\": \"$2\"},
      \"spec\": {\"schedule\": \"0 * * * *\", \"jobTemplate\": {\"spec\": {\"template\": $template}}}}" |
      sed 's/"imagePullSecrets"/"restartPolicy": "Never", "imagePullSecrets"/' ;;
  esac >"$work/$1-$2.json"
  echo "$work/$1-$2.json"
}
# (a) Images: the class's registries, with the operator's prefix semantics.
outside="which is outside the registries its PreviewClass allows (registry.example.com/acme/, ghcr.io/acme)"
refused "a chart's Deployment with an image outside the class's registries" \
  "Deployment web in preview namespace $managed_ns uses image docker.io/miner/miner:1, $outside" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload Deployment web docker.io/miner/miner:1)"
refused "a chart's Deployment with an image under a look-alike of a prefix" "uses image ghcr.io/acme-evil/web:1, $outside" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload Deployment web ghcr.io/acme-evil/web:1)"
refused "a chart's Deployment with an init container outside the class's registries" "uses image busybox:1, $outside" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server \
  -f "$(workload Deployment web ghcr.io/acme/web:1 '"initContainers": [{"name": "init", "image": "busybox:1"}]')"
refused "a chart's CronJob with an image outside the class's registries" \
  "CronJob nightly in preview namespace $managed_ns uses image docker.io/miner/miner:1, $outside" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload CronJob nightly docker.io/miner/miner:1)"
allowed "a chart's Deployment with an image under a prefix ending in /" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload Deployment web registry.example.com/acme/web:1)"
allowed "a chart's Deployment with an image of a prefix without /" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload Deployment web ghcr.io/acme/web:1)"
allowed "a chart's CronJob with an image inside the class's registries" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload CronJob nightly ghcr.io/acme/job:1)"
# The policy is the applier's: the operator checks its own images itself.
allowed "the operator's Deployment with any image" \
  "${as_operator[@]}" create -n "$managed_ns" --dry-run=server -f "$(workload Deployment web docker.io/miner/miner:1)"
# (b) Pods never run as preview-applier.
refused "a chart's Deployment running as preview-applier" \
  "Deployment web in preview namespace $managed_ns runs its pods as ServiceAccount preview-applier" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server \
  -f "$(workload Deployment web ghcr.io/acme/web:1 '"serviceAccountName": "preview-applier"')"
# (c) The platform's Secret copies only as imagePullSecrets, in templates too.
refused "a chart's Deployment reading the TLS copy" \
  "Deployment web in preview namespace $managed_ns uses Secret wildcard-tls (in env secretKeyRef, envFrom or a volume)" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server \
  -f "$(workload Deployment web ghcr.io/acme/web:1 '"volumes": [{"name": "tls", "secret": {"secretName": "wildcard-tls"}}]')"
# A workload it may apply, really created: scaling it (a subresource) is not the policy's.
allowed "a chart creates a Deployment" \
  "${as_applier[@]}" create -n "$managed_ns" -f "$(workload Deployment web registry.example.com/acme/web:1)"
allowed "a chart scales its Deployment" "${as_applier[@]}" scale deployment web -n "$managed_ns" --replicas=2
refused "a chart changes its Deployment's image to one outside the class's registries" "uses image docker.io/miner/miner:2" \
  "${as_applier[@]}" set image deployment/web -n "$managed_ns" app=docker.io/miner/miner:2
# (d) Ingress hosts: the preview's host and names ending in -<host>.
refused "a chart's Ingress for a foreign host" \
  "Ingress web in preview namespace $managed_ns claims host shop.example.com: a preview may publish $flux_host and names ending in -$flux_host" \
  "${as_applier[@]}" create ingress web -n "$managed_ns" --rule="shop.example.com/=web:80" --dry-run=server
refused "a chart's Ingress for another preview's host" "claims host web-pr-other.preview-chart.example.com" \
  "${as_applier[@]}" create ingress web -n "$managed_ns" --rule="web-pr-other.preview-chart.example.com/=web:80" --dry-run=server
refused "a chart's Ingress rule without host" "claims host (a rule without host, which matches every host)" \
  "${as_applier[@]}" create ingress web -n "$managed_ns" --rule="/=web:80" --dry-run=server
refused "a chart's Ingress with a default backend" "has a defaultBackend" \
  "${as_applier[@]}" create ingress web -n "$managed_ns" --rule="web-$flux_host/=web:80" --default-backend=web:80 --dry-run=server
allowed "a chart's Ingress for web-<host> and <host>, with the TLS copy" \
  "${as_applier[@]}" create ingress web -n "$managed_ns" --rule="web-$flux_host/=web:80,tls=wildcard-tls" \
  --rule="$flux_host/=web:80,tls=wildcard-tls" --dry-run=server
# (e) Services: ClusterIP only.
refused "a chart's NodePort Service" "Service web in preview namespace $managed_ns is of type NodePort" \
  "${as_applier[@]}" create service nodeport web -n "$managed_ns" --tcp=80 --dry-run=server
refused "a chart's ExternalName Service" "is of type ExternalName" \
  "${as_applier[@]}" create service externalname web -n "$managed_ns" --external-name=kubernetes.default --dry-run=server
allowed "a chart's ClusterIP Service" \
  "${as_applier[@]}" create service clusterip web -n "$managed_ns" --tcp=80 --dry-run=server
# (f) No ServiceAccount token Secrets (Kubernetes would fill one with preview-applier's token).
cat >"$work/token.json" <<JSON
{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
 "metadata": {"name": "grab", "annotations": {"kubernetes.io/service-account.name": "preview-applier"}}}
JSON
refused "a chart's service-account-token Secret" \
  "Secret grab in preview namespace $managed_ns is of type kubernetes.io/service-account-token, which Kubernetes fills with a long-lived token of ServiceAccount preview-applier" \
  "${as_applier[@]}" create -n "$managed_ns" --dry-run=server -f "$work/token.json"
allowed "a chart's own Secret" \
  "${as_applier[@]}" create secret generic web -n "$managed_ns" --from-literal=password=probe --dry-run=server

log "chart checks passed"
