#!/usr/bin/env bash
# The benchmark: hack/bench.sh N  (default 10). Not part of the tests.
# On a rig of its own ("preview-bench", enough KWOK nodes for N previews), runs the operator
# (release build) on N PreviewEnvironments, then a direct-client baseline creating the same
# objects (those `preview-operator render` prints for the same previews; BENCH_BASELINE=lean:
# the smaller hand-written ones of the benchmarks before session 18), and prints a table and,
# as the last line, one JSON object (hack/bench.py).
# BENCH_WORKLOAD=template: previews from a PreviewTemplate (a copied Secret, a dependency, a
# setup Job, two services, a test); BENCH_ROUNDS (default 3) rounds.
# BENCH_WORKLOAD=flux: no baseline; the operator delivers the same service from a template's
# built-in `services` and, through Flux, from a template's `helmReleases` (the demo chart of the
# rig's fixtures Helm repository), and the two are compared. Flux's controllers (hack/flux.sh)
# and the fixtures server run against the bench rig for it.
# The operator binary is taken from CARGO_TARGET_DIR when set (as cargo builds it).
# BENCH_WRAP: a command the operator runs under, e.g. "heaptrack -o target/heap" for where its
# memory goes (with a binary that keeps its symbols: CARGO_PROFILE_RELEASE_STRIP=none); the
# peak RSS reported is then the wrapper's, not the operator's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
WORKLOAD=${BENCH_WORKLOAD:-default}
case $WORKLOAD in
  default | template | flux) ;;
  *)
    echo "BENCH_WORKLOAD=$WORKLOAD: use default, template or flux" >&2
    exit 2
    ;;
esac
export PREVIEW_RIG_CLUSTER=${PREVIEW_RIG_CLUSTER:-preview-bench}
# Three pods per preview (five with BENCH_WORKLOAD=template: a database and a setup Job more;
# one with flux: one Deployment of one pod on either side, and the sides run one after the
# other), 110 pods per KWOK node, with room to spare.
pods=3
[[ $WORKLOAD == template ]] && pods=5
[[ $WORKLOAD == flux ]] && pods=1
export PREVIEW_RIG_NODES=${PREVIEW_RIG_NODES:-$(((N * pods) / 80 + 2))}
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

log "building the operator (release)"
cargo build --release --locked --bin preview-operator
# Where cargo put it: CARGO_TARGET_DIR when set (relative to here, as cargo reads it).
bin=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/preview-operator
if [[ $WORKLOAD == flux ]]; then
  log "building Flux's controllers and the fixtures server (cached)"
  hack/flux.sh build
fi

# Stopped in reverse order on exit. Flux's controllers keep finalizers on the Flux objects in
# preview namespaces, so they stop together with the whole rig (first, while its kubeconfig still
# names their state), never before it while such namespaces may still be terminating.
pid='' fixtures_pid='' flux_kubeconfig='' wrap=()
cleanup() {
  if [[ -n $pid ]]; then
    # A wrapper waits for the operator and then writes what it recorded: stop the operator
    # and let the wrapper end by itself (a TERM would cut its record short).
    if [[ ${#wrap[@]} == 0 ]]; then
      kill -TERM "$pid" 2>/dev/null || true
    else
      pkill -TERM -P "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  fi
  if [[ -n $fixtures_pid ]]; then
    kill -TERM "$fixtures_pid" 2>/dev/null || true
    wait "$fixtures_pid" 2>/dev/null || true
  fi
  if [[ ${PREVIEW_KEEP_RIG:-0} == 1 ]]; then
    [[ -z $flux_kubeconfig ]] || log "the rig and Flux keep running: hack/flux.sh down --kubeconfig $flux_kubeconfig, then hack/cluster.sh down"
    return
  fi
  if [[ -n $flux_kubeconfig ]]; then
    hack/flux.sh down --kubeconfig "$flux_kubeconfig" >/dev/null 2>&1 || true
  fi
  hack/cluster.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG
kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/previewenvironments.preview.dev crd/previewclasses.preview.dev >/dev/null

# The chart's finalizer policy, as an install on this Kubernetes has it (the API server sets
# each preview's finalizer at creation; the operator's own patch is the fallback).
# BENCH_FINALIZER_POLICY=0 leaves it out, to measure what it costs and saves.
[[ ${BENCH_FINALIZER_POLICY:-1} == 0 ]] || helm template preview-operator charts/preview-operator -n preview-system --kube-version "${K8S_VERSION#v}" \
  --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy \
  --show-only templates/finalizer-policy.yaml 2> >(grep -v "found symbolic link" >&2) |
  kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f - >/dev/null

mkdir -p target
operator_flags=()
flux_class=
if [[ $WORKLOAD == flux ]]; then
  # Flux's CRDs come before the operator, which looks for Flux's kinds when it starts.
  flux_kubeconfig=$KUBECONFIG
  hack/flux.sh up --kubeconfig "$KUBECONFIG"
  fixtures_out=target/bench-flux-fixtures.jsonl
  hack/flux.sh fixtures -chart hack/rig/flux-fixtures/charts/demo >"$fixtures_out" 2>target/bench-flux-fixtures.log &
  fixtures_pid=$!
  deadline=$((SECONDS + 60))
  until grep -q '"kind":"ready"' "$fixtures_out" 2>/dev/null; do
    if ! kill -0 "$fixtures_pid" 2>/dev/null || ((SECONDS > deadline)); then
      log "the Flux fixtures server did not start; target/bench-flux-fixtures.log:"
      cat target/bench-flux-fixtures.log >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  # As hack/test.sh: the Helm repository with the demo chart, the chart's version, the Git host.
  eval "$(python3 - "$fixtures_out" <<'PY'
import json, shlex, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by_kind = {l["kind"]: l for l in lines}
chart = next(l for l in lines if l["kind"] == "chart" and l["name"] == "demo")
for name, value in [
    ("PREVIEW_FLUX_HELM_REPO", by_kind["helm-repository"]["url"]),
    ("PREVIEW_FLUX_CHART_VERSION", chart["version"]),
    ("PREVIEW_FLUX_GIT_URL", by_kind["git-server"]["url"].rstrip("/") + "/"),
]:
    print(f"export {name}={shlex.quote(value)}")
PY
  )"
  # The Flux controllers' metrics (their API requests), for hack/bench.py.
  eval "$(hack/flux.sh env --kubeconfig "$KUBECONFIG")"
  BENCH_FLUX_METRICS=$(awk -F= '/_metrics=/ {sub(/_metrics$/, "", $1); gsub(/_/, "-", $1); printf "%s=http://127.0.0.1:%s/metrics ", $1, $2}' "$FLUX_STATE/ports.env")
  export BENCH_FLUX_METRICS
  # The chart's ClusterRole Flux applies a preview's charts with (bound by the operator to each
  # Flux-delivering preview's ServiceAccount preview-applier), rendered from the chart as
  # hack/test.sh's chart install has it; the operator runs as the rig's admin here, so the
  # chart's other RBAC is not needed.
  applier_role=preview-operator-flux-applier
  helm template preview-operator charts/preview-operator -n preview-system --kube-version "${K8S_VERSION#v}" \
    --show-only templates/rbac.yaml 2> >(grep -v "found symbolic link" >&2) |
    python3 -c '
import json, sys, yaml
role = [d for d in yaml.safe_load_all(sys.stdin)
        if d and d.get("kind") == "ClusterRole" and d["metadata"]["name"] == sys.argv[1]]
if len(role) != 1:
    sys.exit(f"the chart renders {len(role)} ClusterRoles named {sys.argv[1]}")
json.dump(role[0], sys.stdout)
' "$applier_role" |
    kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f - >/dev/null
  operator_flags+=(--flux-applier-role "$applier_role")
  # The class lets its previews deliver through Flux from the fixtures' Helm repository. Images:
  # the class names no allowedRegistries, so any.
  flux_class="  flux: {gitURL: \"$PREVIEW_FLUX_GIT_URL\", chartRepositories: [\"$PREVIEW_FLUX_HELM_REPO\"]}"
fi

# Every bench namespace may preview; the limits are high enough neither to queue nor to refuse
# N previews in one namespace.
kubectl apply --server-side --force-conflicts --field-manager=preview-bench -f - >/dev/null <<EOF
apiVersion: preview.dev/v1alpha1
kind: PreviewClass
metadata: {name: bench, annotations: {preview.dev/is-default-class: "true"}}
spec:
  tenants: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: Exists}]}, repositories: ["*/*"]}]
  limits: {activePerNamespace: 10000, existingPerNamespace: 10000}
$flux_class
EOF

read -ra wrap <<<"${BENCH_WRAP:-}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/bench-operator.log
RUST_LOG=${RUST_LOG:-info} "${wrap[@]}" "$bin" run --http-addr "127.0.0.1:$port" --wake-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 \
  --orphan-sweep-interval 5m "${operator_flags[@]}" >"$log" 2>&1 &
pid=$!
deadline=$((SECONDS + 60))
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
    log "the operator did not become ready; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  sleep 1
done
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); rig: $PREVIEW_RIG_NODES KWOK nodes"
# The baseline creates what this binary renders for the same previews (BENCH_BASELINE, bench.py).
BENCH_OPERATOR_BIN=$bin python3 hack/bench.py "$N" "$KUBECONFIG" "http://127.0.0.1:$port/metrics" "$pid"
