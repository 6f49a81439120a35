#!/usr/bin/env bash
# actionlint (the GitHub Actions workflow linter), built from its Go module on first use into
# the rig's binary cache (PREVIEW_RIG_CACHE, keyed by version, so later runs do not rebuild),
# then run with the given arguments:
#
#   hack/actionlint.sh examples/github-actions/preview.yml
#
# hack/lint.sh runs it on every example workflow.
set -euo pipefail
# shellcheck source=lib/rig.sh
source "$(dirname "$0")/lib/rig.sh"

ACTIONLINT_VERSION=v1.7.12
ACTIONLINT_BIN="$RIG_CACHE/actionlint-$ACTIONLINT_VERSION"

_build_actionlint() {
  _go_env GOBIN="$1" go install -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}

mkdir -p "$RIG_CACHE"
_rig_build_once "$ACTIONLINT_BIN" "actionlint $ACTIONLINT_VERSION" _build_actionlint
exec "$ACTIONLINT_BIN/actionlint" "$@"
