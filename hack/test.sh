#!/usr/bin/env bash
# The test command: formatting, lints, unit tests, then the cluster tests on a real control
# plane (hack/cluster.sh), which is torn down on exit. Works on a fresh machine with Go, Rust,
# Python and kubectl: the rig's binaries are built from the Go module proxy on first use.
#
# Arguments are passed to the cluster tests' harness: hack/test.sh killed runs only the tests
# whose name contains "killed", the chaos test (after fmt, clippy and units; CHAOS_SEED picks a seed).
#
# Environment: PREVIEW_KEEP_RIG=1 leaves the rig running afterwards (for debugging);
# PREVIEW_RIG_CLUSTER picks the rig's name (default preview-test, so a dev rig is untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
export PREVIEW_RIG_CLUSTER=${PREVIEW_RIG_CLUSTER:-preview-test}
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

start=$SECONDS
step() { log "== $* ($((SECONDS - start))s)"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --locked --all-targets -- -D warnings

step "lint: actionlint on the release and example workflows, shellcheck on hack/ (hack/lint.sh)"
hack/lint.sh
hack/docs-test.sh

step "unit tests"
cargo test --locked --lib --bins

step "rig up"
if [[ ${PREVIEW_KEEP_RIG:-0} != 1 ]]; then
  trap 'hack/cluster.sh down || true' EXIT
fi
hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG

# The chart installs the CRDs (and waits until they are established).
step "chart checks (lint, render, schema, install, uninstall, upgrade, tenant RBAC)"
export PREVIEW_CHART_NAMESPACE=preview-system PREVIEW_CHART_RELEASE=preview-operator
hack/chart-test.sh

step "start the operator on the rig, as the chart's ServiceAccount"
cargo build --locked --bin preview-operator
# The operator runs with exactly the chart's RBAC: its kubeconfig impersonates the installed
# ServiceAccount, so a missing permission fails the cluster tests.
export PREVIEW_OPERATOR_SA="system:serviceaccount:$PREVIEW_CHART_NAMESPACE:$PREVIEW_CHART_RELEASE"
export PREVIEW_OPERATOR_KUBECONFIG=$PWD/target/operator-sa.kubeconfig
kubectl config view --raw --minify -o json | python3 -c '
import json, sys
config = json.load(sys.stdin)
ns = sys.argv[2]
for user in config["users"]:
    user["user"]["as"] = sys.argv[1]
    user["user"]["as-groups"] = ["system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"]
json.dump(config, sys.stdout)
' "$PREVIEW_OPERATOR_SA" "$PREVIEW_CHART_NAMESPACE" >"$PREVIEW_OPERATOR_KUBECONFIG"
export PREVIEW_OPERATOR_BIN=$PWD/target/debug/preview-operator
# As the chart sets them in the pod: the operator's namespace, the namespace where the Secrets a
# class names are read, the log reader it binds (the tests' own operators inherit them).
export POD_NAMESPACE=$PREVIEW_CHART_NAMESPACE PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE=$PREVIEW_CHART_NAMESPACE-platform-secrets PREVIEW_OPERATOR_LOG_READER_ROLE=$PREVIEW_CHART_RELEASE-log-reader
operator_log=target/operator-test.log
operator_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREVIEW_OPERATOR_HTTP="127.0.0.1:$operator_port"
export PREVIEW_OPERATOR_METRICS_URL="http://127.0.0.1:$operator_port/metrics"
wake_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREVIEW_OPERATOR_WAKE_URL="http://127.0.0.1:$wake_port"
# A fresh webhook secret per run, handed to the operator as a file and to the tests.
PREVIEW_WEBHOOK_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export PREVIEW_WEBHOOK_SECRET
printf '%s\n' "$PREVIEW_WEBHOOK_SECRET" >target/webhook-secret
chmod 600 target/webhook-secret
# Test policy (hack/classes/test.yaml): a small concurrency limit, so the queue is observable;
# a fast orphan sweep.
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-tests -f hack/classes/test.yaml >/dev/null
# Previews labelled preview.dev/shard belong to the leader-election test's own operators.
KUBECONFIG=$PREVIEW_OPERATOR_KUBECONFIG RUST_LOG=${RUST_LOG:-info,preview_operator=debug} \
  "$PREVIEW_OPERATOR_BIN" run \
  --http-addr "127.0.0.1:$operator_port" \
  --wake-addr "127.0.0.1:$wake_port" --wake-service preview-operator.preview-system.svc.cluster.local \
  --health-addr 127.0.0.1:0 \
  --leader-election --lease-namespace "$PREVIEW_CHART_NAMESPACE" --lease-name preview-operator-tests \
  --selector '!preview.dev/shard' \
  --github-webhook-secret-file target/webhook-secret \
  --orphan-sweep-interval 3s >"$operator_log" 2>&1 &
operator_pid=$!
stop_operator() {
  kill -TERM "$operator_pid" 2>/dev/null || true
  wait "$operator_pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_operator
  if ((rc != 0)); then
    log "tests failed; last operator log lines ($operator_log):"
    tail -n 40 "$operator_log" >&2 || true
  fi
  if [[ ${PREVIEW_KEEP_RIG:-0} != 1 ]]; then
    hack/cluster.sh down || true
  fi
}
trap cleanup EXIT
export PREVIEW_OPERATOR_UNDER_TEST=1
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$operator_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { log "the operator exited"; exit 1; }
  sleep 1
done
curl -fs "http://127.0.0.1:$operator_port/readyz" >/dev/null || { log "the operator never became ready"; exit 1; }

rm -f target/measurements.log
step "integration and cluster tests (on the rig)"
# Cluster tests mostly wait on the rig, so run more of them at once than there are cores.
cargo test --locked --test '*' -- --include-ignored --test-threads 6 "$@"

if [[ -f target/measurements.log ]]; then
  log "measured during the tests:"
  sed 's/^/    /' target/measurements.log >&2
fi
step "all tests passed"
