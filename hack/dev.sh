#!/usr/bin/env bash
# See it work: starts the rig (building it on first use), installs the CRD, runs the operator,
# applies the sample PreviewEnvironment and shows it going Ready.
#
#   hack/dev.sh        set everything up (idempotent); the rig and operator keep running
#   hack/dev.sh down   stop the operator and the rig
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

pid_file=target/dev-operator.pid
log_file=target/dev-operator.log

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

hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG

log "installing the PreviewEnvironment CRD"
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-dev -f crds/ >&2
kubectl wait --for=condition=Established --timeout=60s crd/previewenvironments.preview.dev crd/previewclasses.preview.dev >&2
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-dev -f examples/previewclass-dev.yaml >&2

log "building and starting the operator (log: $log_file)"
cargo build --locked --bin preview-operator
stop_operator
nohup target/debug/preview-operator run --http-addr 127.0.0.1:8080 --wake-addr 127.0.0.1:8081 --health-addr 127.0.0.1:8082 >"$log_file" 2>&1 &
echo $! >"$pid_file"

log "applying examples/preview.yaml"
kubectl get namespace team-shop >/dev/null 2>&1 || kubectl create namespace team-shop >&2
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-dev -f examples/preview.yaml >&2

start=$SECONDS
if ! kubectl wait --for=condition=Ready --timeout=120s -n team-shop previewenv/shop-pr-123 >&2; then
  log "the sample did not become Ready; its conditions and the operator log follow"
  kubectl get previewenv -n team-shop shop-pr-123 -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
  tail -n 30 "$log_file" >&2
  exit 1
fi
log "shop-pr-123 is Ready after $((SECONDS - start))s"
kubectl get previewenv -n team-shop -o wide
ns=$(kubectl get previewenv -n team-shop shop-pr-123 -o jsonpath='{.status.namespace}')
kubectl get deployments,services,jobs -n "$ns"

cat >&2 <<MSG

The rig and the operator keep running. To use them from this shell:
  eval "\$(hack/cluster.sh env)"
  kubectl get previewenv -A
  kubectl describe previewenv -n team-shop shop-pr-123
Operator log: $log_file. Stop everything with: hack/dev.sh down
MSG
