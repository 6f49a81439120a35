#!/usr/bin/env bash
# The test command: formatting, lints, unit tests, then the cluster tests on a real control
# plane (hack/cluster.sh), which is torn down on exit. Works on a fresh machine with Go, Rust,
# Python and kubectl: the rig's binaries are built from the Go module proxy on first use.
#
# Arguments are passed to the cluster tests' harness: hack/test.sh killed runs only the tests
# whose name contains "killed", the chaos test (after fmt, clippy and units; CHAOS_SEED picks a seed).
#
# Flux's controllers (hack/flux.sh) run against the rig for the previews delivered through Flux,
# with a loopback Helm repository and Git host (hack/rig/flux-fixtures).
#
# Environment: PREVIEW_KEEP_RIG=1 leaves the rig and Flux running afterwards (for debugging);
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
# Flux's controllers keep finalizers on the Flux objects in preview namespaces: they are stopped
# together with the whole rig (first, while its kubeconfig still names their state), never
# before it while such namespaces may still be terminating.
rig_kubeconfig=
rig_down() {
  if [[ -n $rig_kubeconfig ]]; then
    hack/flux.sh down --kubeconfig "$rig_kubeconfig" || true
  fi
  hack/cluster.sh down || true
}
if [[ ${PREVIEW_KEEP_RIG:-0} != 1 ]]; then
  trap rig_down EXIT
fi
hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG
rig_kubeconfig=$KUBECONFIG

# The chart installs the CRDs (and waits until they are established).
step "chart checks (lint, render, schema, install, uninstall, upgrade, tenant RBAC)"
export PREVIEW_CHART_NAMESPACE=preview-system PREVIEW_CHART_RELEASE=preview-operator
hack/chart-test.sh

# Flux delivers the previews of templates with helmReleases and kustomizations (tests/flux.rs):
# its controllers (built on first use, then cached) and its CRDs come before the operator, which
# finds Flux's kinds at start. The fixtures server is the tests' Helm repository and Git host;
# the tests create their own Git repositories through its control endpoint.
step "flux: controllers and the fixtures server (hack/flux.sh)"
hack/flux.sh up --kubeconfig "$KUBECONFIG"
mkdir -p target
fixtures_out=target/flux-fixtures.jsonl
hack/flux.sh fixtures -chart hack/rig/flux-fixtures/charts/demo >"$fixtures_out" 2>target/flux-fixtures.log &
fixtures_pid=$!
stop_fixtures() {
  kill -TERM "$fixtures_pid" 2>/dev/null || true
  wait "$fixtures_pid" 2>/dev/null || true
}
trap 'stop_fixtures; [[ ${PREVIEW_KEEP_RIG:-0} == 1 ]] || rig_down' EXIT
deadline=$((SECONDS + 60))
until grep -q '"kind":"ready"' "$fixtures_out" 2>/dev/null; do
  if ! kill -0 "$fixtures_pid" 2>/dev/null || ((SECONDS > deadline)); then
    log "the Flux fixtures server did not start; target/flux-fixtures.log:"
    cat target/flux-fixtures.log >&2 || true
    exit 1
  fi
  sleep 0.2
done
# PREVIEW_FLUX_HELM_REPO: the Helm repository (the demo chart); PREVIEW_FLUX_CHART_VERSION:
# its version; PREVIEW_FLUX_GIT_URL: the Git host, so <url><owner>/<repo>.git is a repository
# (a class's spec.flux.gitURL); PREVIEW_FLUX_CONTROL: where tests create repositories and push
# commits (hack/rig/flux-fixtures/main.go).
eval "$(python3 - "$fixtures_out" <<'PY'
import json, shlex, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by_kind = {l["kind"]: l for l in lines}
chart = next(l for l in lines if l["kind"] == "chart" and l["name"] == "demo")
for name, value in [
    ("PREVIEW_FLUX_HELM_REPO", by_kind["helm-repository"]["url"]),
    ("PREVIEW_FLUX_CHART_VERSION", chart["version"]),
    ("PREVIEW_FLUX_GIT_URL", by_kind["git-server"]["url"].rstrip("/") + "/"),
    ("PREVIEW_FLUX_CONTROL", by_kind["control"]["url"]),
]:
    print(f"export {name}={shlex.quote(value)}")
PY
)"

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
# Where cargo put it: CARGO_TARGET_DIR when set (relative to here, as cargo reads it).
PREVIEW_OPERATOR_BIN=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/preview-operator
export PREVIEW_OPERATOR_BIN
# As the chart sets them in the pod: the operator's namespace, the namespace where the Secrets a
# class names are read, the log reader and the Flux applier role it binds (the tests' own
# operators inherit them).
export POD_NAMESPACE=$PREVIEW_CHART_NAMESPACE PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE=$PREVIEW_CHART_NAMESPACE-platform-secrets PREVIEW_OPERATOR_LOG_READER_ROLE=$PREVIEW_CHART_RELEASE-log-reader
export PREVIEW_OPERATOR_FLUX_APPLIER_ROLE=$PREVIEW_CHART_RELEASE-flux-applier
operator_log=target/operator-test.log
rm -rf target/test-operators
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
  stop_fixtures
  if ((rc != 0)); then
    log "tests failed; last operator log lines ($operator_log):"
    tail -n 40 "$operator_log" >&2 || true
    # Operators that tests started themselves (Operator::start) log to a file each, named
    # after the port of their --http-addr (a test's `metrics` URL has it).
    if compgen -G 'target/test-operators/*.log' >/dev/null; then
      log "warnings and errors of the operators tests started (target/test-operators/<port>.log):"
      grep -H -E ' (WARN|ERROR) |"level":"(WARN|ERROR)"' target/test-operators/*.log | tail -n 30 >&2 || true
    fi
    # Flux's state goes with the rig: keep its controllers' logs.
    if eval "$(hack/flux.sh env --kubeconfig "$KUBECONFIG")" && [[ -d $FLUX_STATE/logs ]]; then
      rm -rf target/flux-logs && cp -r "$FLUX_STATE/logs" target/flux-logs &&
        log "Flux's controller logs: target/flux-logs/; the fixtures server's: target/flux-fixtures.log"
    fi
  fi
  if [[ ${PREVIEW_KEEP_RIG:-0} != 1 ]]; then
    rig_down
  else
    log "the rig and Flux keep running: hack/flux.sh down, then hack/cluster.sh down"
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
