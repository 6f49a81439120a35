#!/usr/bin/env bash
# Evaluate the chart without an image: on a rig of its own (preview-try), installs the chart
# with replicaCount=0 (CRDs, default PreviewClass, ServiceAccount, least-privilege RBAC,
# admission policies: everything but a running operator), builds the operator with cargo and
# runs it on this machine as the chart's ServiceAccount (a kubeconfig holding that
# ServiceAccount's token, so the chart's RBAC and admission policies apply to it as in a pod),
# with the environment and arguments of the chart's Deployment; then applies the sample
# PreviewEnvironment and shows it going Ready.
#
#   hack/try.sh        set everything up (idempotent); the rig and operator keep running
#   hack/try.sh down   stop the operator and the rig
#
# Environment: PREVIEW_RIG_CLUSTER (default preview-try, so hack/dev.sh's rig is untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
export PREVIEW_RIG_CLUSTER=${PREVIEW_RIG_CLUSTER:-preview-try}
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

release=preview-operator
namespace=preview-system
pid_file=target/try-operator.pid
log_file=target/try-operator.log
sa_kubeconfig=target/try-operator-sa.kubeconfig
# Not hack/dev.sh's ports: both can run at once.
http_addr=127.0.0.1:18080 wake_addr=127.0.0.1:18081 health_addr=127.0.0.1:18082

stop_operator() {
  if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill -TERM "$(cat "$pid_file")" || true
    log "stopped the operator"
  fi
  rm -f "$pid_file"
}

if [[ ${1:-up} == down ]]; then
  stop_operator
  hack/cluster.sh down
  exit 0
fi

mkdir -p target
hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG

log "installing the chart with replicaCount=0 (release $release in $namespace)"
# The default class admits namespace team-shop for acme/ repositories, as hack/dev.sh's does.
values=$(mktemp)
trap 'rm -f "$values"' EXIT
cat >"$values" <<'YAML'
replicaCount: 0
defaultClass:
  tenants:
    - namespaces: [team-shop]
      repositories: ["acme/*", "acme/*/*"]
YAML
helm_install() {
  # helm warns about the chart's CRD link on every call; the link is deliberate.
  helm upgrade --install "$release" charts/preview-operator -n "$namespace" --create-namespace \
    -f "$values" --wait --timeout 2m 2> >(grep -v "found symbolic link" >&2) >/dev/null
}
helm_install
# On a rig without the CRDs, the first install creates them and the second the default class.
if ! kubectl get previewclass standard >/dev/null 2>&1; then
  helm_install
fi
kubectl get previewclass standard >&2

log "building the operator"
cargo build --locked --bin preview-operator
binary=${CARGO_TARGET_DIR:-target}/debug/preview-operator

log "a kubeconfig for the ServiceAccount $namespace/$release ($sa_kubeconfig)"
token=$(kubectl create token "$release" -n "$namespace" --duration=24h)
# The admin kubeconfig's cluster (server, CA), with the ServiceAccount's token as its only user.
(
  umask 077
  kubectl config view --raw --minify -o json | TOKEN=$token python3 -c '
import json, os, sys
config = json.load(sys.stdin)
config["users"] = [{"name": "operator", "user": {"token": os.environ["TOKEN"]}}]
for context in config["contexts"]:
    context["context"]["user"] = "operator"
json.dump(config, sys.stdout)
' >"$sa_kubeconfig"
)
if [[ $(KUBECONFIG=$sa_kubeconfig kubectl auth whoami -o jsonpath='{.status.userInfo.username}') != "system:serviceaccount:$namespace:$release" ]]; then
  log "the kubeconfig $sa_kubeconfig does not authenticate as the ServiceAccount"
  exit 1
fi

log "starting the operator as the ServiceAccount, with the chart Deployment's settings (log: $log_file)"
# The Deployment's environment (the literal values; the pod's own fields set below) and its
# arguments after `run`, as the chart rendered them.
deployment=$(kubectl get deployment "$release" -n "$namespace" -o json)
mapfile -t chart_env < <(python3 -c '
import json, sys
container = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
for env in container.get("env", []):
    if "value" in env:
        print(env["name"] + "=" + env["value"])
' <<<"$deployment")
mapfile -t chart_args < <(python3 -c '
import json, sys
container = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
print("\n".join(container.get("args", [])[1:]))
' <<<"$deployment")
stop_operator
# Listeners on loopback (flags win over the chart's environment), text logs for a person.
env "${chart_env[@]}" POD_NAME="try-$(hostname)" POD_NAMESPACE="$namespace" \
  PREVIEW_OPERATOR_SERVICE_ACCOUNT="$release" PREVIEW_OPERATOR_LOG_FORMAT=text KUBECONFIG="$sa_kubeconfig" \
  nohup "$binary" run "${chart_args[@]}" --http-addr "$http_addr" --wake-addr "$wake_addr" \
  --health-addr "$health_addr" >"$log_file" 2>&1 &
echo $! >"$pid_file"
deadline=$((SECONDS + 60))
until curl -fs "http://$health_addr/readyz" >/dev/null 2>&1; do
  if ! kill -0 "$(cat "$pid_file")" 2>/dev/null || ((SECONDS > deadline)); then
    log "the operator did not become ready; its log follows"
    tail -n 30 "$log_file" >&2
    exit 1
  fi
  sleep 1
done

log "applying examples/preview.yaml"
kubectl get namespace team-shop >/dev/null 2>&1 || kubectl create namespace team-shop >&2
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-try -f examples/preview.yaml >&2

start=$SECONDS
if ! kubectl wait --for=condition=Ready --timeout=120s -n team-shop previewenv/shop-pr-123 >&2; then
  log "the sample did not become Ready; its conditions and the operator log follow"
  kubectl get previewenv -n team-shop shop-pr-123 -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
  tail -n 30 "$log_file" >&2
  exit 1
fi
log "shop-pr-123 is Ready after $((SECONDS - start))s"
kubectl get previewenv -n team-shop -o wide

cat >&2 <<MSG

The rig and the operator (as the ServiceAccount $namespace/$release) keep running. To use them:
  export PREVIEW_RIG_CLUSTER=$PREVIEW_RIG_CLUSTER; eval "\$(hack/cluster.sh env)"
  kubectl get previewenv -A
Operator log: $log_file. Stop everything with: hack/try.sh down
MSG
