#!/usr/bin/env python3
"""Checks the default PreviewClass in a rendered chart (stdin).

  previewclass.py --none                 no PreviewClass at all
  previewclass.py --crd crds/previewclasses.yaml --name standard [--spec JSON]

With --name: exactly one PreviewClass, of that name, annotated as the default class and with
helm.sh/resource-policy: keep; its spec valid against the CRD's schema (every key known to the
API, so a misspelt field such as allowDNS cannot be pruned away silently by the API server,
types, enums, patterns, bounds, required keys), without empty lists or maps; and, with --spec,
equal to that JSON.
"""
import argparse
import json
import re
import sys

import yaml


def check(value, schema, path, errors):
    """Appends to errors where value breaks the OpenAPI v3 schema (the subset CRDs use)."""
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{path}: null")
        return
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: {value!r} is not an integer")
            return
    elif kind in types and not isinstance(value, types[kind]):
        errors.append(f"{path}: {value!r} is not of type {kind}")
        return
    if isinstance(value, (list, dict)) and not value:
        errors.append(f"{path}: empty (leave it out)")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: length {len(value)} out of bounds")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            errors.append(f"{path}: {value} out of [{schema.get('minimum')}, {schema.get('maximum')}]")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), f"{path}[{i}]", errors)
    if isinstance(value, dict):
        if len(value) > schema.get("maxProperties", len(value)):
            errors.append(f"{path}: more than {schema['maxProperties']} keys")
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key}")
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None and key in properties:
                check(item, properties[key], f"{path}.{key}", errors)
            elif isinstance(schema.get("additionalProperties"), dict):
                check(item, schema["additionalProperties"], f"{path}.{key}", errors)
            else:
                errors.append(f"{path}.{key}: not a field of the API")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--none", action="store_true")
    parser.add_argument("--crd")
    parser.add_argument("--name")
    parser.add_argument("--spec", help="the expected spec, as JSON")
    args = parser.parse_args()
    classes = [d for d in yaml.safe_load_all(sys.stdin) if isinstance(d, dict) and d.get("kind") == "PreviewClass"]
    if args.none:
        if classes:
            sys.exit(f"expected no PreviewClass, the chart renders {[c['metadata']['name'] for c in classes]}")
        return
    if len(classes) != 1:
        sys.exit(f"expected one PreviewClass, the chart renders {len(classes)}")
    pclass = classes[0]
    meta = pclass["metadata"]
    if meta.get("name") != args.name:
        sys.exit(f"the PreviewClass is named {meta.get('name')!r}, not {args.name!r}")
    annotations = meta.get("annotations") or {}
    for key, want in {"preview.dev/is-default-class": "true", "helm.sh/resource-policy": "keep"}.items():
        if annotations.get(key) != want:
            sys.exit(f"the PreviewClass lacks the annotation {key}: {want!r} (has {annotations})")
    if "namespace" in meta:
        sys.exit("the PreviewClass is cluster-scoped: no metadata.namespace")
    with open(args.crd) as f:
        crd = next(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == pclass["apiVersion"].split("/")[1])
    errors = []
    check(pclass.get("spec"), version["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec", errors)
    if errors:
        sys.exit("the PreviewClass does not fit the API:\n  " + "\n  ".join(errors))
    if args.spec is not None:
        want = json.loads(args.spec)
        if pclass["spec"] != want:
            sys.exit(
                "the PreviewClass spec differs\n got: "
                + json.dumps(pclass["spec"], sort_keys=True)
                + "\nwant: "
                + json.dumps(want, sort_keys=True)
            )
    print(f"PreviewClass {args.name}: default, kept, valid")


if __name__ == "__main__":
    main()
