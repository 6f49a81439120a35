#!/usr/bin/env bash
# The benchmark: hack/bench.sh N  (default 10). Not part of the tests.
# On a rig of its own ("preview-bench", enough KWOK nodes for N previews), runs the operator
# (release build) on N PreviewEnvironments, then a direct-client baseline creating the same
# objects, and prints a table and, as the last line, one JSON object (hack/bench.py).
# BENCH_WORKLOAD=template: previews from a PreviewTemplate (a copied Secret, a dependency, a
# setup Job, two services, a test); BENCH_ROUNDS (default 3) rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
export PREVIEW_RIG_CLUSTER=${PREVIEW_RIG_CLUSTER:-preview-bench}
# Three pods per preview (five with BENCH_WORKLOAD=template: a database and a setup Job more),
# 110 pods per KWOK node, with room to spare.
pods=3
[[ ${BENCH_WORKLOAD:-default} == template ]] && pods=5
export PREVIEW_RIG_NODES=${PREVIEW_RIG_NODES:-$(((N * pods) / 80 + 2))}
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

log "building the operator (release)"
cargo build --release --locked --bin preview-operator
hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG
kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/previewenvironments.preview.dev crd/previewclasses.preview.dev >/dev/null
# Every bench namespace may preview; the limits are high enough neither to queue nor to refuse
# N previews in one namespace.
kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f - >/dev/null <<EOF
apiVersion: preview.dev/v1alpha1
kind: PreviewClass
metadata: {name: bench, annotations: {preview.dev/is-default-class: "true"}}
spec:
  tenants: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: Exists}]}, repositories: ["*/*"]}]
  limits: {activePerNamespace: 10000, existingPerNamespace: 10000}
EOF

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/bench-operator.log
RUST_LOG=${RUST_LOG:-info} target/release/preview-operator run --http-addr "127.0.0.1:$port" --wake-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 \
  --orphan-sweep-interval 5m >"$log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ ${PREVIEW_KEEP_RIG:-0} == 1 ]] || hack/cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 1
done
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); rig: $PREVIEW_RIG_NODES KWOK nodes"
python3 hack/bench.py "$N" "$KUBECONFIG" "http://127.0.0.1:$port/metrics" "$pid"
