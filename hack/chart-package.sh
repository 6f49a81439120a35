#!/usr/bin/env bash
# Packages the Helm chart for a release, as .github/workflows/release.yml does on a tag v*:
# a copy of charts/preview-operator (the CRD link resolved) with the chart's version and
# appVersion set to the release's version and the default image.repository set to the image
# that release published (and, given a source URL, the chart's home and sources set to it),
# then `helm package` into the output directory. Needs helm on PATH (the rig's:
# eval "$(hack/cluster.sh env)"); no cluster, no network.
#
#   hack/chart-package.sh <version> <image repository> <output dir> [source URL]
#   hack/chart-package.sh v0.6.0 ghcr.io/preview-operator/preview-operator dist
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# != 3 && $# != 4)); then
  echo "usage: $0 <version, e.g. 0.6.0> <image repository, e.g. ghcr.io/preview-operator/preview-operator> <output dir> [source URL]" >&2
  exit 2
fi
version=${1#v}
image=$2
out=$3
source_url=${4:-}
if [[ -n $source_url && ! $source_url =~ ^https://[A-Za-z0-9./_-]+$ ]]; then
  echo "$0: '$source_url' is not an https URL" >&2
  exit 1
fi
# SemVer 2 (Helm requires it for OCI charts): 1.2.3, 1.2.3-rc.1, 1.2.3+build.
if ! [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]]; then
  echo "$0: '$1' is not a SemVer version (want v1.2.3 or 1.2.3)" >&2
  exit 1
fi
if ! [[ $image =~ ^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+$ ]]; then
  echo "$0: '$image' is not a lower-case image repository without a tag" >&2
  exit 1
fi

# Chart versions never go backwards: the chart README's upgrade notes name chart versions
# ("from chart 0.2.0"), and helm orders releases by them. The tag's version (its major.minor.patch)
# must be at least the chart's version in Chart.yaml.
current=$(awk '/^version:/ {print $2; exit}' charts/preview-operator/Chart.yaml)
if ! python3 -c '
import sys
core = lambda v: tuple(int(x) for x in v.split("+")[0].split("-")[0].split("."))
sys.exit(0 if core(sys.argv[1]) >= core(sys.argv[2]) else 1)
' "$version" "$current"; then
  echo "$0: version $version is below the chart's version $current (charts/preview-operator/Chart.yaml): tag at least v$current" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -rL charts/preview-operator "$work/preview-operator"
chart=$work/preview-operator
python3 - "$chart" "$version" "$image" "$source_url" <<'PY'
import re
import sys

chart, version, image, source = sys.argv[1:]


def replace(path, pattern, new):
    text = open(path, encoding="utf-8").read()
    text, n = re.subn(pattern, new, text, count=1, flags=re.M)
    if n != 1:
        sys.exit(f"chart-package: no line matching {pattern!r} in {path}")
    open(path, "w", encoding="utf-8").write(text)


replace(f"{chart}/Chart.yaml", r"^version: .*$", f"version: {version}")
replace(f"{chart}/Chart.yaml", r"^appVersion: .*$", f'appVersion: "{version}"')
if source:
    with open(f"{chart}/Chart.yaml", "a", encoding="utf-8") as f:
        f.write(f"home: {source}\nsources: [{source}]\n")
# The first `repository:` under the top-level `image:` key.
replace(f"{chart}/values.yaml", r"^(image:\n(?:  .*\n|\s*#.*\n)*?)  repository: .*$", rf"\g<1>  repository: {image}")
PY
mkdir -p "$out"
helm lint --strict "$chart" >/dev/null
helm package "$chart" --destination "$out"
