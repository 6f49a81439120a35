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

step "integration and cluster tests (on the rig)"
cargo test --locked --test '*' -- --include-ignored

step "all tests passed"
