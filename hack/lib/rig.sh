# shellcheck shell=bash
# Shared by hack/*.sh: builds the test rig's binaries from the Go module proxy into a cache
# directory outside the repo (keyed by version, so only the first run pays) and knows where
# the rig's cluster lives. Source it; it defines functions and variables only.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../rig/versions.env
source "$REPO_ROOT/hack/rig/versions.env"

RIG_CACHE=${PREVIEW_RIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preview-operator/rig}
# shellcheck disable=SC2034 # used by the scripts that source this file
RIG_CLUSTER=${PREVIEW_RIG_CLUSTER:-preview-rig}
# kwokctl keeps its cluster state here; outside the repo so a clean clone starts clean.
export KWOK_WORKDIR=${KWOK_WORKDIR:-$RIG_CACHE/kwok-workdir}

K8S_BIN="$RIG_CACHE/k8s-$K8S_VERSION"
ETCD_BIN="$RIG_CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$RIG_CACHE/kwok-$KWOK_VERSION"
HELM_BIN="$RIG_CACHE/helm-$HELM_VERSION"
# The rig's own kubectl must come first: kwokctl and the tests take the first kubectl on PATH,
# and the image's one is older than the API server.
# shellcheck disable=SC2034 # used by the scripts that source this file
RIG_PATH="$K8S_BIN:$ETCD_BIN:$KWOK_BIN:$HELM_BIN"

log() { printf '%s [rig] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# go_build <dest-dir> <marker> <cmd...>: runs the build only when the marker is missing,
# into a temporary directory renamed into place, so an interrupted build is never mistaken
# for a finished one.
_rig_build_once() {
  local dest=$1 label=$2
  shift 2
  if [[ -f "$dest/.complete" ]]; then
    return 0
  fi
  log "building $label into $dest (first run only; this takes a while)"
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local start=$SECONDS
  if ! "$@" "$tmp"; then
    rm -rf "$tmp"
    log "building $label failed"
    return 1
  fi
  touch "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "built $label in $((SECONDS - start))s"
}

_go_env() {
  # GOTOOLCHAIN=local: never fetch another Go; -trimpath: reproducible, no local paths.
  env GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false" "$@"
}

_build_k8s() {
  local out=$1
  local major=${K8S_VERSION#v}
  major=${major%%.*}
  local minor=${K8S_VERSION#v*.}
  minor=${minor%%.*}
  local ldflags="-s -w"
  local key val
  # Without these the binaries say v0.0.0-master, which breaks version checks (helm kubeVersion).
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" "gitTreeState=clean" \
    "buildDate=1970-01-01T00:00:00Z"; do
    key=${kv%%=*}
    val=${kv#*=}
    ldflags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
  done
  (
    cd "$REPO_ROOT/hack/rig/k8s" || exit 1
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      _go_env go build -ldflags "$ldflags" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd" || exit 1
    done
  )
}

_build_etcd() {
  local out=$1
  (cd "$REPO_ROOT/hack/rig/etcd" && _go_env go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

_build_kwok() {
  local out=$1
  _go_env GOBIN="$out" go install -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" || return 1
  # KWOK's default stages, taken from the module itself: any Stage we supply replaces the
  # defaults, so cluster.sh passes these along with the rig's own (hack/rig/stages-extra.yaml).
  local dir
  dir=$(GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') || return 1
  local f first=1
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ $first == 1 ]] || echo "---"
    first=0
    cat "$dir/kustomize/stage/$f" || return 1
  done >"$out/default-stages.yaml"
}

_build_helm() {
  local out=$1
  _go_env GOBIN="$out" go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# rig_build: builds every rig binary that is not cached yet.
rig_build() {
  mkdir -p "$RIG_CACHE"
  _rig_build_once "$ETCD_BIN" "etcd $ETCD_VERSION" _build_etcd
  _rig_build_once "$KWOK_BIN" "kwok/kwokctl $KWOK_VERSION" _build_kwok
  _rig_build_once "$HELM_BIN" "helm $HELM_VERSION" _build_helm
  _rig_build_once "$K8S_BIN" "kubernetes $K8S_VERSION" _build_k8s
}
