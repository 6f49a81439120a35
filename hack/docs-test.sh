#!/usr/bin/env bash
# The docs test, run by hack/test.sh with the lints: keeps the Markdown docs true.
# - Every relative link of README.md, docs/ and the chart's README names a file that exists,
#   and its #fragment (if any) a heading of that file.
# - Every fenced shell block marked for it (`<!-- docs-test -->` on the line right before the
#   fence; `<!-- docs-test: fails -->` when the block must fail) runs, from the repository's
#   root, with the debug binary first on PATH, bounded by DOCS_TEST_TIMEOUT seconds (60).
#   A failure names the file and line of the block. Marked blocks need no cluster and no
#   network, and run without one where unshare allows (docs/contributing/testing.md,
#   "The docs test").
# - Every flag of `preview-operator run` has a row in docs/platform/operations.md.
#
# Usage: hack/docs-test.sh [--no-build]   (--no-build: use the binary already built)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '%s [docs-test] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ${1:-} != --no-build ]]; then
  log "cargo build --bin preview-operator"
  cargo build --locked --quiet --bin preview-operator
fi
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$PWD/$target
if [[ ! -x $target/debug/preview-operator ]]; then
  log "no $target/debug/preview-operator: build it (cargo build --bin preview-operator)"
  exit 1
fi

# Every flag of `run` has its row in the table of docs/platform/operations.md.
flags_doc=docs/platform/operations.md
missing=$(comm -23 \
  <("$target/debug/preview-operator" run --help | grep -oE '^ +--[a-z-]+' | tr -d ' ' | grep -vx -- --help | sort -u) \
  <(grep -oE '^\| .--[a-z-]+' "$flags_doc" | grep -oE -- '--[a-z-]+' | sort -u))
if [[ -n $missing ]]; then
  log "flags of preview-operator run missing from the table in $flags_doc: ${missing//$'\n'/ }"
  exit 1
fi

# Without a network where the kernel allows it (a user and network namespace): a marked block
# that reaches out fails here rather than passing by luck.
isolate=()
if unshare --net --map-root-user true 2>/dev/null; then
  isolate=(unshare --net --map-root-user)
else
  log "unshare --net is not available: the blocks run with the machine's network"
fi
mapfile -t files < <({ echo README.md; find docs -name '*.md' -type f; echo charts/preview-operator/README.md; } | sort -u)
PATH="$target/debug:$PATH" DOCS_TEST_ISOLATE="${isolate[*]}" \
  python3 - "${DOCS_TEST_TIMEOUT:-60}" "${files[@]}" <<'PY'
import os
import re
import signal
import subprocess
import sys
import tempfile

timeout = float(sys.argv[1])
isolate = os.environ.pop("DOCS_TEST_ISOLATE", "").split()
files = sys.argv[2:]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
MARK = re.compile(r"^<!--\s*docs-test(?::\s*(fails))?\s*-->\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
failures = []


def scan(path):
    """(line number, line) outside fences, and the fenced blocks with their marks."""
    prose, blocks = [], []
    fence = None
    for number, line in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
        if fence:
            marker, start, lang, mark, body = fence
            stripped = line.strip()
            if stripped.startswith(marker[0] * len(marker)) and set(stripped) == {marker[0]}:
                blocks.append((start, lang, mark, "\n".join(body)))
                fence = None
            else:
                body.append(line)
            continue
        m = FENCE.match(line)
        if m:
            previous = prose[-1] if prose and prose[-1][0] == number - 1 else (0, "")
            mark = MARK.match(previous[1].strip())
            fence = (m[1], number, m[2], mark, [])
            continue
        prose.append((number, line))
    if fence:
        failures.append(f"{path}:{fence[1]}: a code fence that is never closed")
    return prose, blocks


def slug(text):
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


anchors_cache = {}


def anchors(path):
    if path not in anchors_cache:
        seen, found = {}, set()
        for _, line in scan(path)[0]:
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m[2])
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        anchors_cache[path] = found
    return anchors_cache[path]


def check_links(path, prose):
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)  # links in inline code are not links
        for m in LINK.finditer(line):
            target = m[1]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:...
                continue
            file, _, fragment = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            if not os.path.exists(resolved):
                failures.append(f"{path}:{number}: broken link {target}: {resolved} does not exist")
                continue
            if fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
                failures.append(f"{path}:{number}: broken link {target}: no heading #{fragment} in {resolved}")


def run(path, start, lang, mark, body):
    if lang not in ("sh", "bash", "shell"):
        failures.append(f"{path}:{start}: a block marked docs-test must be sh or bash, not {lang or 'unlabelled'}")
        return 0
    must_fail = mark[1] == "fails"
    with tempfile.TemporaryDirectory(prefix="docs-test-") as tmp:
        env = dict(os.environ, TMPDIR=tmp, HOME=tmp)
        proc = subprocess.Popen(isolate + ["bash", "-euo", "pipefail", "-c", body], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            failures.append(f"{path}:{start}: the block ran past {timeout:g}s\n{out.decode(errors='replace')[-4000:]}")
            return 1
    if (code != 0) != must_fail:
        wanted = "to fail" if must_fail else "to succeed"
        failures.append(f"{path}:{start}: the block was expected {wanted}, exit status {code}:\n"
                        + body + "\n--- output (end) ---\n" + out.decode(errors="replace")[-4000:])
    return 1


ran = 0
for path in files:
    prose, blocks = scan(path)
    check_links(path, prose)
    for start, lang, mark, body in blocks:
        if mark:
            ran += run(path, start, lang, mark, body)
for failure in failures:
    print(f"docs-test: {failure}", file=sys.stderr)
print(f"docs-test: {len(files)} files, {ran} blocks run, {len(failures)} failures", file=sys.stderr)
sys.exit(1 if failures or ran == 0 else 0)
PY
