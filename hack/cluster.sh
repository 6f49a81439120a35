#!/usr/bin/env bash
# The test rig: a real control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) with KWOK's simulated nodes, started by kwokctl from locally built binaries.
#
#   hack/cluster.sh up          build what is missing, start the rig (idempotent)
#   hack/cluster.sh down        stop it and delete its state
#   hack/cluster.sh status      say whether it is up
#   hack/cluster.sh kubeconfig  print the kubeconfig path
#   hack/cluster.sh env         print shell exports (PATH with the rig's kubectl/helm, KUBECONFIG)
#
# Environment: PREVIEW_RIG_CACHE (binary cache, default ~/.cache/preview-operator/rig),
# PREVIEW_RIG_CLUSTER (cluster name, default preview-rig), PREVIEW_RIG_NODES (default 2).
#
# kubectl logs works for pods that a KWOK Logs object (kwok.x-k8s.io/v1alpha1, in the pod's
# namespace and named like the pod) or ClusterLogs object points at a file of this machine. The
# file must be in a container runtime's log format, one line per log line (plain text is refused
# with "unsupported log format"):
#   2026-01-01T00:00:00Z stdout F <the line>
set -euo pipefail
# shellcheck source=lib/rig.sh
source "$(dirname "$0")/lib/rig.sh"

NODES=${PREVIEW_RIG_NODES:-2}
export PATH="$RIG_PATH:$PATH"

kubeconfig_path() {
  echo "$KWOK_WORKDIR/clusters/$RIG_CLUSTER/kubeconfig.yaml"
}

cluster_exists() {
  [[ -d "$KWOK_WORKDIR/clusters/$RIG_CLUSTER" ]]
}

healthy() {
  cluster_exists || return 1
  kubectl --kubeconfig "$(kubeconfig_path)" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

nodes_ready() {
  local ready
  ready=$(kubectl --kubeconfig "$(kubeconfig_path)" get nodes --no-headers 2>/dev/null | awk '$2=="Ready"' | wc -l)
  ((ready >= NODES))
}

print_logs_hint() {
  log "the rig failed to start; component logs are in $KWOK_WORKDIR/clusters/$RIG_CLUSTER/logs/"
  local f
  for f in "$KWOK_WORKDIR/clusters/$RIG_CLUSTER"/logs/*.log; do
    [[ -f $f ]] || continue
    log "--- last lines of $f"
    tail -n 5 "$f" >&2 || true
  done
}

write_config() {
  local conf=$1
  {
    cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  # Loopback only: the rig must never listen on other interfaces.
  bindAddress: 127.0.0.1
  kubeVersion: $K8S_VERSION
  kubeApiserverBinary: $K8S_BIN/kube-apiserver
  kubeControllerManagerBinary: $K8S_BIN/kube-controller-manager
  kubeSchedulerBinary: $K8S_BIN/kube-scheduler
  kubectlBinary: $K8S_BIN/kubectl
  etcdBinary: $ETCD_BIN/etcd
  kwokControllerBinary: $KWOK_BIN/kwok
  # Real authorization and admission (RBAC, Pod Security), as in a production cluster.
  kubeAuthorization: true
  kubeAdmission: true
  # kubectl logs (GET pods/NAME/log): the API server proxies it to the kwok controller's
  # kubelet-like server (127.0.0.1, the port in each node's status.daemonEndpoints), which answers
  # from the file a Logs (namespaced, named like the pod) or ClusterLogs object names.
  enableCRDs:
  - Logs
  - ClusterLogs
componentsPatches:
# The default Service range (a /24) runs out at about 250 Services; benchmarks create 1000+.
- name: kube-apiserver
  extraArgs:
  - {key: service-cluster-ip-range, value: "10.0.0.0/16"}
# The controller-manager's default client limits (20 QPS) make namespace deletion, not the code
# under test, the bottleneck of every teardown; raise them as a production cluster would.
- name: kube-controller-manager
  extraArgs:
  - {key: kube-api-qps, value: "200"}
  - {key: kube-api-burst, value: "400"}
  - {key: concurrent-namespace-syncs, value: "20"}
- name: kube-scheduler
  extraArgs:
  - {key: kube-api-qps, value: "200"}
  - {key: kube-api-burst, value: "400"}
---
EOF
    cat "$KWOK_BIN/default-stages.yaml"
    echo "---"
    cat "$REPO_ROOT/hack/rig/stages-extra.yaml"
  } >"$conf"
}

wait_for() {
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    if ((SECONDS > deadline)); then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 1
  done
}

# The kwok controller starts watching Logs and ClusterLogs before kwokctl has created their CRDs,
# so its first list fails and it retries with back-off; until then kubectl logs answers "no logs
# found". Probe both watches straight at the kwok controller (the API server refuses to proxy
# nodes/proxy to a loopback address) on the port the nodes advertise to the API server.
logs_probe_ok() {
  local port=$1 pod
  for pod in preview-rig-probe-logs preview-rig-probe-clusterlogs; do
    [[ $(curl -sk -o /dev/null -w '%{http_code}' \
      "https://127.0.0.1:$port/containerLogs/default/$pod/probe") == 200 ]] || return 1
  done
}

wait_for_logs() {
  local kc port deadline=$((SECONDS + 60))
  kc=$(kubeconfig_path)
  port=$(kubectl --kubeconfig "$kc" get nodes -o jsonpath='{.items[0].status.daemonEndpoints.kubeletEndpoint.Port}')
  kubectl --kubeconfig "$kc" apply -f - >/dev/null <<'EOF'
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata: {name: preview-rig-probe-logs, namespace: default}
spec:
  logs: [{logsFile: /dev/null}]
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: preview-rig-probe}
spec:
  selector: {matchNamespaces: [default], matchNames: [preview-rig-probe-clusterlogs]}
  logs: [{logsFile: /dev/null}]
EOF
  until logs_probe_ok "$port"; do
    if ((SECONDS > deadline)); then
      log "timed out waiting for the kwok controller to serve Logs/ClusterLogs on 127.0.0.1:$port"
      return 1
    fi
    sleep 0.2
  done
  kubectl --kubeconfig "$kc" delete --wait=false -n default logs.kwok.x-k8s.io/preview-rig-probe-logs >/dev/null
  kubectl --kubeconfig "$kc" delete --wait=false clusterlogs.kwok.x-k8s.io/preview-rig-probe >/dev/null
}

up() {
  local start=$SECONDS
  rig_build
  # The configuration the rig is created with; a rig created with another one (an older version
  # of this script, other stages) is recreated, not reused: the rigs are throwaway.
  local conf="$RIG_CACHE/kwokctl-$RIG_CLUSTER.yaml"
  local want="$conf.tmp.$$"
  write_config "$want"
  if cluster_exists && ! cmp -s "$want" "$conf"; then
    log "rig '$RIG_CLUSTER' was created with another configuration; recreating it"
    kwokctl --name "$RIG_CLUSTER" delete cluster >&2 || true
    rm -rf "${KWOK_WORKDIR:?}/clusters/$RIG_CLUSTER"
  fi
  mv -f "$want" "$conf"
  if healthy && nodes_ready; then
    log "rig '$RIG_CLUSTER' is already up ($(kubeconfig_path))"
    return 0
  fi
  if cluster_exists; then
    # A stopped or half-started rig: start it again rather than rebuilding state.
    log "restarting existing rig '$RIG_CLUSTER'"
    if ! kwokctl --name "$RIG_CLUSTER" start cluster --wait 2m >&2 || ! wait_for "the API server" 60 healthy; then
      log "restart failed; recreating the rig"
      kwokctl --name "$RIG_CLUSTER" delete cluster >&2 || true
    fi
  fi
  if ! cluster_exists; then
    mkdir -p "$KWOK_WORKDIR"
    log "creating rig '$RIG_CLUSTER' (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
    if ! kwokctl --name "$RIG_CLUSTER" create cluster --config "$conf" --runtime binary --wait 3m >&2; then
      print_logs_hint
      return 1
    fi
  fi
  if ! wait_for "the API server" 120 healthy; then
    print_logs_hint
    return 1
  fi
  # Real nodes report ephemeral storage, and preview namespaces' quotas and LimitRanges request
  # it: without it on the node, the scheduler would refuse every pod.
  kwokctl --name "$RIG_CLUSTER" scale node --replicas "$NODES" \
    --param '.allocatable["ephemeral-storage"] = "1Ti"' >&2
  if ! wait_for "$NODES ready nodes" 120 nodes_ready; then
    print_logs_hint
    return 1
  fi
  if ! wait_for_logs; then
    print_logs_hint
    return 1
  fi
  # The default ServiceAccount is created asynchronously by the controller-manager; pods in a
  # fresh namespace need it.
  wait_for "the default ServiceAccount" 60 kubectl --kubeconfig "$(kubeconfig_path)" -n default get serviceaccount default >/dev/null 2>&1
  log "rig '$RIG_CLUSTER' is up in $((SECONDS - start))s; KUBECONFIG=$(kubeconfig_path)"
}

down() {
  if cluster_exists && [[ -x "$KWOK_BIN/kwokctl" ]]; then
    kwokctl --name "$RIG_CLUSTER" delete cluster >&2
  fi
  rm -rf "${KWOK_WORKDIR:?}/clusters/$RIG_CLUSTER"
  log "rig '$RIG_CLUSTER' is down"
}

status() {
  if healthy; then
    echo "up: $(kubeconfig_path)"
    kubectl --kubeconfig "$(kubeconfig_path)" get nodes
  else
    echo "down"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) kubeconfig_path ;;
  env)
    echo "export PATH=\"$RIG_PATH:\$PATH\""
    echo "export KUBECONFIG=\"$(kubeconfig_path)\""
    ;;
  build) rig_build ;;
  *)
    echo "usage: $0 up|down|status|kubeconfig|env|build" >&2
    exit 2
    ;;
esac
