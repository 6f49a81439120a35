#!/usr/bin/env bash
# The test command: formatting, lints, unit tests, then the cluster tests on a real control
# plane (hack/cluster.sh), which is torn down on exit. Works on a fresh machine with Go, Rust,
# Python and kubectl: the rig's binaries are built from the Go module proxy on first use.
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

step "start the operator on the rig"
cargo build --locked --bin preview-operator
kubectl apply --server-side --force-conflicts --field-manager=preview-operator-tests -f crds/previewenvironments.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/previewenvironments.preview.dev >/dev/null
operator_log=target/operator-test.log
# Test policy: a small concurrency limit and a fast orphan sweep, so both are observable.
RUST_LOG=${RUST_LOG:-info,preview_operator=debug} target/debug/preview-operator run \
  --max-previews-per-namespace 2 --orphan-sweep-interval 3s >"$operator_log" 2>&1 &
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

step "integration and cluster tests (on the rig)"
# Cluster tests mostly wait on the rig, so run more of them at once than there are cores.
cargo test --locked --test '*' -- --include-ignored --test-threads 6

step "all tests passed"
