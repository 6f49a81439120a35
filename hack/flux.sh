#!/usr/bin/env bash
# Flux on the test rig: source-controller, kustomize-controller and helm-controller, built from
# the Go module proxy into the rig cache and run as local processes against a rig cluster, plus
# a loopback Helm chart repository and Git server for them to fetch from (hack/rig/flux-fixtures).
#
#   hack/flux.sh build                        build the controllers and the fixtures server (cached)
#   hack/flux.sh up [--kubeconfig PATH]       apply the Flux CRDs, start the controllers (idempotent)
#   hack/flux.sh down [--kubeconfig PATH]     stop the controllers, delete their state
#   hack/flux.sh status [--kubeconfig PATH]   say whether they are up; ports, logs
#   hack/flux.sh env [--kubeconfig PATH]      print shell exports (binaries, storage address, logs)
#   hack/flux.sh fixtures [ARGS...]           run the fixtures server in the foreground (see
#                                             hack/rig/flux-fixtures/main.go; -chart, -git)
#
# up, down, status and env need the kubeconfig of a running rig: --kubeconfig PATH or KUBECONFIG,
# e.g. KUBECONFIG=$(PREVIEW_RIG_CLUSTER=x hack/cluster.sh kubeconfig). The controllers' state
# (PID files, logs, source-controller's artifact storage) lives under the rig cache in a
# directory named after the kubeconfig's cluster, so controllers for several rigs can run side
# by side. Everything listens on 127.0.0.1 only, on free ports.
#
# Environment: PREVIEW_RIG_CACHE (as hack/cluster.sh), PREVIEW_FLUX_SERVICE_ACCOUNT (the service
# account kustomize- and helm-controller impersonate when an object names none; default
# flux-applier).
#
# The controllers keep finalizers on Flux objects: stop them (down) only after the namespaces
# holding Flux objects are gone, or together with the whole rig, or those namespaces hang in
# Terminating.
set -euo pipefail
# shellcheck source=lib/rig.sh
source "$(dirname "$0")/lib/rig.sh"
# shellcheck source=lib/flux.sh
source "$(dirname "$0")/lib/flux.sh"

export PATH="$RIG_PATH:$PATH"
DEFAULT_SA=${PREVIEW_FLUX_SERVICE_ACCOUNT:-flux-applier}

usage() {
  echo "usage: $0 build|up|down|status|env [--kubeconfig PATH] | fixtures [ARGS...]" >&2
  exit 2
}

KC=${KUBECONFIG:-}

parse_kubeconfig_flag() {
  while (($#)); do
    case $1 in
      --kubeconfig) KC=${2:?--kubeconfig needs a path}; shift 2 ;;
      --kubeconfig=*) KC=${1#--kubeconfig=}; shift ;;
      *) usage ;;
    esac
  done
  if [[ -z $KC ]]; then
    log "no kubeconfig: pass --kubeconfig PATH or set KUBECONFIG (e.g. to \$(hack/cluster.sh kubeconfig))"
    exit 2
  fi
  if [[ $KC == *:* ]]; then
    log "KUBECONFIG=$KC names several files; pass the rig's one kubeconfig"
    exit 2
  fi
  if [[ ! -f $KC ]]; then
    log "kubeconfig $KC does not exist"
    exit 1
  fi
  KC=$(cd "$(dirname "$KC")" && pwd)/$(basename "$KC")
  local cluster
  cluster=$(kubectl --kubeconfig "$KC" config view --minify -o jsonpath='{.clusters[0].name}' 2>/dev/null || true)
  if [[ -z $cluster ]]; then
    log "kubeconfig $KC has no current cluster"
    exit 1
  fi
  STATE="$RIG_CACHE/flux-state/${cluster//[^A-Za-z0-9._-]/_}"
}

k() { kubectl --kubeconfig "$KC" "$@"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# alive <pid>: running, not a zombie (an exited controller is reparented to PID 1, which may be
# slow to reap it).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# pid_of <controller>: the PID in its PID file if that process is still the controller.
pid_of() {
  local f="$STATE/$1.pid" pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  # The PID may have been reused by another program since: check it is our binary.
  tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1 | grep -qx "$FLUX_BIN/$1" || return 1
  echo "$pid"
}

ready() {
  local name=$1 port
  port=$(state_get "${name//-/_}_health")
  [[ -n $port ]] && curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null
}

state_get() {
  [[ -f "$STATE/ports.env" ]] || return 0
  awk -F= -v k="$1" '$1==k {print $2}' "$STATE/ports.env"
}

all_up() {
  [[ -f "$STATE/kubeconfig" && $(<"$STATE/kubeconfig") == "$KC" ]] || return 1
  local name
  for name in "${FLUX_CONTROLLERS[@]}"; do
    pid_of "$name" >/dev/null && ready "$name" || return 1
  done
}

stop_controllers() {
  local name pid pids=()
  for name in "${FLUX_CONTROLLERS[@]}"; do
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$STATE/$name.pid"
  done
  # They drain in-flight reconciliations on SIGTERM (up to --graceful-shutdown-timeout, 10 min by
  # default); the rig does not wait that long.
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid"; then
      log "pid $pid did not stop on SIGTERM within 10s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

apply_crds() {
  log "applying the Flux CRDs"
  # Server-side: the HelmRelease CRD is too large for client-side apply's annotation.
  k apply --server-side --force-conflicts -f "$FLUX_BIN/crds/" >/dev/null
  local f names=()
  for f in "$FLUX_BIN"/crds/*.yaml; do
    names+=("crd/$(basename "$f" .yaml | sed -E 's/^([^_]+)_(.*)$/\2.\1/')")
  done
  k wait --for condition=established --timeout=60s "${names[@]}" >/dev/null
}

start_controller() {
  local name=$1
  shift
  local log_file="$STATE/logs/$name.log"
  # setsid: the controllers outlive the shell that started them (and its process group);
  # down stops them by PID.
  # The PID file is written by the process that then becomes the controller (exec), whether or
  # not setsid had to fork.
  # shellcheck disable=SC2016 # expanded by the inner bash
  KUBECONFIG=$KC setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$FLUX_BIN/$name" "$@" \
    >>"$log_file" 2>&1 </dev/null &
  local deadline=$((SECONDS + 5))
  until [[ -s "$STATE/$name.pid" ]] || ((SECONDS > deadline)); do sleep 0.1; done
}

up() {
  local start=$SECONDS
  flux_build
  k --request-timeout=5s get --raw /readyz >/dev/null || {
    log "the cluster of $KC does not answer; start it first (hack/cluster.sh up)"
    return 1
  }
  mkdir -p "$STATE"
  if all_up; then
    log "flux is already up for $KC (state in $STATE)"
    return 0
  fi
  # A partly running or stale set: start all three afresh.
  stop_controllers
  apply_crds
  # A restart keeps the artifact storage and, when it is still free, its port: the artifact
  # URLs already in the sources' status stay valid.
  local storage name
  storage=$(state_get storage)
  if [[ -z $storage ]] || ! port_free "$storage"; then
    storage=$(free_port)
  fi
  # Logs are appended to, so a crashed controller's last words survive the restart.
  mkdir -p "$STATE/logs" "$STATE/storage"
  {
    echo "storage=$storage"
    for name in "${FLUX_CONTROLLERS[@]}"; do
      echo "${name//-/_}_metrics=$(free_port)"
      echo "${name//-/_}_health=$(free_port)"
    done
  } >"$STATE/ports.env"
  echo "$KC" >"$STATE/kubeconfig"
  # Flags all three share: loopback ports, every namespace watched, no leader election (one
  # replica; it would need an in-cluster namespace), no event forwarding (there is no
  # notification-controller). They have no --kubeconfig flag: they read KUBECONFIG.
  common() {
    local n=${1//-/_}
    echo "--metrics-addr=127.0.0.1:$(state_get "${n}_metrics")"
    echo "--health-addr=127.0.0.1:$(state_get "${n}_health")"
    echo "--watch-all-namespaces=true"
    echo "--enable-leader-election=false"
    echo "--events-addr="
    echo "--log-level=info"
  }
  local -a args
  mapfile -t args < <(common source-controller)
  start_controller source-controller "${args[@]}" \
    --storage-path="$STATE/storage" \
    --storage-addr="127.0.0.1:$storage" \
    --storage-adv-addr="127.0.0.1:$storage"
  # The appliers: a Kustomization or HelmRelease may only name a source (and, for
  # dependsOn/valuesFrom/..., other objects) in its own namespace; one that names no
  # serviceAccountName impersonates $DEFAULT_SA of its namespace (so without that account and
  # its RBAC it applies nothing); kustomizations may not pull remote bases. source-controller
  # has no cross-namespace flag (its references are namespace-local by construction), and its
  # --default-service-account is for cloud workload identity, so it is left unset.
  mapfile -t args < <(common kustomize-controller)
  start_controller kustomize-controller "${args[@]}" \
    --no-cross-namespace-refs=true \
    --no-remote-bases=true \
    --default-service-account="$DEFAULT_SA"
  mapfile -t args < <(common helm-controller)
  start_controller helm-controller "${args[@]}" \
    --no-cross-namespace-refs=true \
    --default-service-account="$DEFAULT_SA"
  local deadline=$((SECONDS + 90))
  for name in "${FLUX_CONTROLLERS[@]}"; do
    until ready "$name"; do
      if ! pid_of "$name" >/dev/null || ((SECONDS > deadline)); then
        log "$name did not become ready; last lines of $STATE/logs/$name.log:"
        tail -n 20 "$STATE/logs/$name.log" >&2 || true
        stop_controllers
        return 1
      fi
      sleep 0.5
    done
  done
  log "flux is up in $((SECONDS - start))s for $KC: artifacts on http://127.0.0.1:$storage, logs in $STATE/logs"
}

down() {
  if [[ -d $STATE ]]; then
    stop_controllers
    rm -rf "$STATE"
  fi
  log "flux is down for $KC"
}

status() {
  if all_up; then
    echo "up: $KC"
  else
    echo "down: $KC"
  fi
  local name pid state
  for name in "${FLUX_CONTROLLERS[@]}"; do
    if pid=$(pid_of "$name"); then
      if ready "$name"; then state=ready; else state="not ready"; fi
      echo "$name: pid $pid, $state, health 127.0.0.1:$(state_get "${name//-/_}_health"), log $STATE/logs/$name.log"
    else
      echo "$name: not running"
    fi
  done
  all_up
}

env_cmd() {
  echo "export FLUX_BIN=\"$FLUX_BIN\""
  echo "export FLUX_FIXTURES=\"$FLUX_FIXTURES_BIN/flux-fixtures\""
  echo "export FLUX_STATE=\"$STATE\""
  echo "export FLUX_STORAGE_ADDR=\"127.0.0.1:$(state_get storage)\""
  echo "export FLUX_DEFAULT_SERVICE_ACCOUNT=\"$DEFAULT_SA\""
}

cmd=${1:-}
(($#)) && shift
case $cmd in
  build)
    (($# == 0)) || usage
    mkdir -p "$RIG_CACHE"
    _rig_build_once "$HELM_BIN" "helm $HELM_VERSION" _build_helm
    _rig_build_once "$K8S_BIN" "kubernetes $K8S_VERSION" _build_k8s
    flux_build
    ;;
  up) parse_kubeconfig_flag "$@" && up ;;
  down) parse_kubeconfig_flag "$@" && down ;;
  status) parse_kubeconfig_flag "$@" && status ;;
  env) parse_kubeconfig_flag "$@" && env_cmd ;;
  fixtures)
    _rig_build_once "$HELM_BIN" "helm $HELM_VERSION" _build_helm
    _rig_build_once "$FLUX_FIXTURES_BIN" "flux fixtures server" _build_flux_fixtures
    exec "$FLUX_FIXTURES_BIN/flux-fixtures" -helm "$HELM_BIN/helm" "$@"
    ;;
  *) usage ;;
esac
