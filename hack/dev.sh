#!/usr/bin/env bash
# See it work: starts the rig (building it on first use), installs the CRD, applies the sample
# PreviewEnvironment and shows it with kubectl. The rig keeps running afterwards; stop it with
# hack/cluster.sh down.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

hack/cluster.sh up
export PATH="$RIG_PATH:$PATH"
KUBECONFIG=$(hack/cluster.sh kubeconfig)
export KUBECONFIG

log "installing the PreviewEnvironment CRD"
kubectl apply --server-side --field-manager=preview-operator-dev -f crds/previewenvironments.yaml >&2
kubectl wait --for=condition=Established --timeout=60s crd/previewenvironments.preview.dev >&2

log "applying examples/preview.yaml"
kubectl create namespace team-shop --dry-run=client -o yaml | kubectl apply -f - >&2
kubectl apply --server-side --field-manager=preview-operator-dev -f examples/preview.yaml >&2

kubectl get previewenv -n team-shop -o wide
cat >&2 <<MSG

The rig is running. To use it from this shell:
  eval "\$(hack/cluster.sh env)"
  kubectl get previewenv -A
Stop it with: hack/cluster.sh down
MSG
