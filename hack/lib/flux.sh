# shellcheck shell=bash
# Shared by hack/flux.sh: builds Flux's source-, kustomize- and helm-controller and the rig's
# Flux fixtures server (hack/rig/flux-fixtures) into the rig cache. Source it after
# hack/lib/rig.sh; it defines functions and variables only.

FLUX_BIN="$RIG_CACHE/flux-source-$FLUX_SOURCE_VERSION-kustomize-$FLUX_KUSTOMIZE_VERSION-helm-$FLUX_HELM_VERSION"
FLUX_CONTROLLERS=(source-controller kustomize-controller helm-controller)

# The fixtures program is part of this repository, so its cache key is a hash of its sources
# (go.mod, go.sum, *.go) rather than a version.
_flux_fixtures_key() {
  (cd "$REPO_ROOT/hack/rig/flux-fixtures" &&
    find . -maxdepth 1 -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
}
FLUX_FIXTURES_BIN="$RIG_CACHE/flux-fixtures-$(_flux_fixtures_key)"

_flux_version_of() {
  case $1 in
    source-controller) echo "$FLUX_SOURCE_VERSION" ;;
    kustomize-controller) echo "$FLUX_KUSTOMIZE_VERSION" ;;
    helm-controller) echo "$FLUX_HELM_VERSION" ;;
  esac
}

# _flux_build_controller <name> <out>: the controllers' go.mod files have replace lines (their
# ./api module, a go-digest pin, kustomize pins), which "go install mod@version" refuses, so the
# module is downloaded, copied somewhere writable and built from inside (its main package is the
# module root), keeping its go.sum and its pins. Its CRDs (config/crd/bases) are copied to
# <out>/crds.
_flux_build_controller() {
  local name=$1 out=$2 version dir work
  version=$(_flux_version_of "$name")
  dir=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "github.com/fluxcd/$name@$version" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') || return 1
  work=$(mktemp -d "${TMPDIR:-/tmp}/flux-build.XXXXXX") || return 1
  if ! cp -r "$dir/." "$work/" || ! chmod -R u+w "$work"; then
    rm -rf "$work"
    return 1
  fi
  # Nested modules (the controller's ./api) are not part of a module's zip, so a replace onto a
  # local directory points at nothing: drop it; the require line names the published api module
  # at the controller's own version.
  local rep
  for rep in $(cd "$work" && GOTOOLCHAIN=local go mod edit -json |
    python3 -c 'import json,sys; [print(r["Old"]["Path"]) for r in json.load(sys.stdin).get("Replace") or [] if r["New"]["Path"].startswith(".")]'); do
    (cd "$work" && GOTOOLCHAIN=local go mod edit -dropreplace "$rep") || { rm -rf "$work"; return 1; }
  done
  local start=$SECONDS rc=0
  # nice: the rig is built on developer machines that are busy with other builds.
  (cd "$work" && _go_env nice -n 19 go build -ldflags "-s -w" -o "$out/$name" .) || rc=1
  log "  $name $version: go build took $((SECONDS - start))s"
  if ((rc == 0)); then
    mkdir -p "$out/crds" && cp "$dir"/config/crd/bases/*.yaml "$out/crds/" || rc=1
  fi
  rm -rf "$work"
  return $rc
}

_build_flux() {
  local out=$1 name
  for name in "${FLUX_CONTROLLERS[@]}"; do
    _flux_build_controller "$name" "$out" || return 1
  done
}

_build_flux_fixtures() {
  local out=$1
  (cd "$REPO_ROOT/hack/rig/flux-fixtures" &&
    _go_env nice -n 19 go build -ldflags "-s -w" -o "$out/flux-fixtures" .)
}

# flux_build: builds the Flux controllers and the fixtures server unless cached.
flux_build() {
  mkdir -p "$RIG_CACHE"
  _rig_build_once "$FLUX_BIN" "flux controllers (source $FLUX_SOURCE_VERSION, kustomize $FLUX_KUSTOMIZE_VERSION, helm $FLUX_HELM_VERSION)" _build_flux || return 1
  _rig_build_once "$FLUX_FIXTURES_BIN" "flux fixtures server" _build_flux_fixtures
}
