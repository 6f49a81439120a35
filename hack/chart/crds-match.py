#!/usr/bin/env python3
"""Fails unless the CRDs in a rendered chart (stdin) are exactly the committed crds/*.yaml.

The chart may add metadata.labels and metadata.annotations (Helm's labels, resource-policy);
everything else must be identical, so the chart can never ship a schema other than the one
`preview-operator crd` generates. Usage: helm template ... | crds-match.py crds/*.yaml
"""
import sys

import yaml


def crds(docs):
    out = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            out[doc["metadata"]["name"]] = doc
    return out


def main():
    committed = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            committed.update(crds(yaml.safe_load_all(f)))
    rendered = crds(yaml.safe_load_all(sys.stdin))
    if not committed:
        sys.exit("no CRDs in the committed files: " + " ".join(sys.argv[1:]))
    if set(rendered) != set(committed):
        sys.exit(f"the chart renders CRDs {sorted(rendered)}, the repository has {sorted(committed)}")
    for name, doc in rendered.items():
        doc["metadata"].pop("labels", None)
        doc["metadata"].pop("annotations", None)
        if doc != committed[name]:
            sys.exit(f"the chart's {name} differs from the committed CRD (beyond labels and annotations)")
    print(f"{len(rendered)} CRD(s) identical to the committed files")


if __name__ == "__main__":
    main()
