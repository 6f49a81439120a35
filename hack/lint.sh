#!/usr/bin/env bash
# Lints that need no cluster, run by hack/test.sh after clippy:
# - actionlint on every GitHub Actions workflow: the repository's own (.github/workflows/, the
#   release) and the examples under examples/ (built by hack/actionlint.sh on first use; every
#   file is passed by path, so the examples need not be in .github/workflows);
# - shellcheck on the scripts under hack/ and on every workflow's `run:` steps (through
#   actionlint); hack/shellcheck.sh installs it on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/rig.sh
source hack/lib/rig.sh

# Workflows: every YAML file of .github/workflows/, and the YAML files under examples/ with
# top-level `on:` and `jobs:` keys.
mapfile -t workflows < <(find .github/workflows -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
if ((${#workflows[@]} == 0)); then
  log "no workflows found in .github/workflows/"
  exit 1
fi
mapfile -t examples < <(grep -rlZE '^jobs:' examples --include='*.yml' --include='*.yaml' |
  xargs -0 -r grep -lE '^on:' | sort)
if ((${#examples[@]} == 0)); then
  log "no workflows found under examples/"
  exit 1
fi
workflows+=("${examples[@]}")
log "actionlint: ${workflows[*]}"
# actionlint runs shellcheck on every `run:` script with it.
shellcheck=$(hack/shellcheck.sh path)
hack/shellcheck.sh --version >/dev/null
hack/actionlint.sh -no-color -shellcheck="$shellcheck" "${workflows[@]}"

log "shellcheck: hack/**/*.sh"
# -x -P SCRIPTDIR: follow `source` lines, resolving their `# shellcheck source=` paths
# relative to each script.
mapfile -t scripts < <(find hack -name '*.sh' -type f | sort)
hack/shellcheck.sh -x -P SCRIPTDIR "${scripts[@]}"
log "lint passed"
