#!/usr/bin/env python3
"""Checks, in a rendered chart, that the operator reads Secrets and ConfigMaps only where allowed.

Reads `helm template` output (YAML, several documents) on stdin.
  source-reader.py --release-namespace NS --platform-namespace NS --service-account SA --role NAME

- The ClusterRole NAME (the chart's source reader) grants exactly get, list and watch of
  secrets and configmaps, is aggregated into nothing, and NO binding of the chart binds it: a
  team binds it in its own namespace to opt in.
- No ClusterRole that a ClusterRoleBinding of the chart binds, and no ClusterRole aggregated into
  the built-in roles, grants any read of secrets or configmaps (cluster-wide reads).
- A namespaced Role that grants such a read lives in the platform Secrets namespace only, which
  is not the release namespace (the operator's own credential Secrets are there), and reads
  Secrets only.
- The Deployment runs as SA and tells the operator both names: PREVIEW_OPERATOR_SERVICE_ACCOUNT
  from the pod's spec.serviceAccountName, PREVIEW_OPERATOR_SOURCE_READER_ROLE = NAME (the
  operator prints them in the command for a namespace that has not opted in), and where the
  class Secrets are: PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE = the platform namespace.
"""
import argparse
import sys

import yaml

READS = {"get", "list", "watch", "*"}
SOURCES = {"secrets", "configmaps", "*"}


def reads_sources(rules):
    """The (resource, verb) pairs of `rules` that read Secrets or ConfigMaps."""
    found = []
    for rule in rules or []:
        if not set(rule.get("apiGroups") or []) & {"", "*"}:
            continue
        for resource in set(rule.get("resources") or []) & SOURCES:
            for verb in set(rule.get("verbs") or []) & READS:
                found.append(f"{verb} {resource}")
    return sorted(found)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--release-namespace", required=True)
    parser.add_argument("--platform-namespace", required=True)
    parser.add_argument("--service-account", required=True)
    parser.add_argument("--role", required=True)
    args = parser.parse_args()
    docs = [d for d in yaml.safe_load_all(sys.stdin) if isinstance(d, dict)]
    errors = []

    def of_kind(kind):
        return [d for d in docs if d.get("kind") == kind]

    cluster_roles = {d["metadata"]["name"]: d for d in of_kind("ClusterRole")}
    reader = cluster_roles.get(args.role)
    if reader is None:
        errors.append(f"no ClusterRole {args.role}")
    else:
        rules = [
            {k: sorted(v) for k, v in rule.items() if k in ("apiGroups", "resources", "verbs")}
            for rule in reader.get("rules") or []
        ]
        want = [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch"]}]
        if rules != want or any(("resourceNames" in r or "nonResourceURLs" in r) for r in reader.get("rules") or []):
            errors.append(f"ClusterRole {args.role} has rules {reader.get('rules')}, want {want}")
        labels = reader["metadata"].get("labels") or {}
        aggregated = [k for k in labels if k.startswith("rbac.authorization.k8s.io/aggregate-to-")]
        if aggregated or "aggregationRule" in reader:
            errors.append(f"ClusterRole {args.role} is aggregated ({aggregated}): it must be bound per namespace only")

    for binding in of_kind("ClusterRoleBinding") + of_kind("RoleBinding"):
        ref = binding.get("roleRef") or {}
        where = f'{binding["kind"]} {binding["metadata"].get("namespace", "")}/{binding["metadata"]["name"]}'
        if ref.get("kind") == "ClusterRole" and ref.get("name") == args.role:
            errors.append(f"{where} binds {args.role}: the chart must leave it unbound (teams opt in)")
        if binding["kind"] == "ClusterRoleBinding" and ref.get("kind") == "ClusterRole":
            role = cluster_roles.get(ref.get("name"))
            if role is not None and reads_sources(role.get("rules")):
                errors.append(
                    f"{where} grants cluster-wide {', '.join(reads_sources(role.get('rules')))} "
                    f"(ClusterRole {ref.get('name')})"
                )
    for name, role in cluster_roles.items():
        labels = role["metadata"].get("labels") or {}
        if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels) and reads_sources(role.get("rules")):
            errors.append(f"ClusterRole {name} is aggregated into built-in roles and reads {reads_sources(role.get('rules'))}")
    if args.platform_namespace == args.release_namespace:
        errors.append(f"the platform Secrets namespace is the release namespace {args.release_namespace}")
    for role in of_kind("Role"):
        ns = role["metadata"].get("namespace")
        reads = reads_sources(role.get("rules"))
        if reads and ns != args.platform_namespace:
            errors.append(f'Role {ns}/{role["metadata"]["name"]} reads Secrets or ConfigMaps outside the platform namespace')
        if any(not r.endswith(" secrets") for r in reads):
            errors.append(f'Role {ns}/{role["metadata"]["name"]} reads {reads}: only Secrets are copied from there')

    deployments = [d for d in of_kind("Deployment") if d["metadata"].get("namespace") == args.release_namespace]
    if len(deployments) != 1:
        errors.append(f"expected one Deployment in {args.release_namespace}, found {len(deployments)}")
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") != args.service_account:
            errors.append(f'the Deployment runs as {pod.get("serviceAccountName")}, want {args.service_account}')
        env = {e["name"]: e for e in pod["containers"][0].get("env") or []}
        sa = env.get("PREVIEW_OPERATOR_SERVICE_ACCOUNT") or {}
        if ((sa.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "spec.serviceAccountName":
            errors.append(f"PREVIEW_OPERATOR_SERVICE_ACCOUNT must come from fieldRef spec.serviceAccountName, is {sa or 'unset'}")
        platform = (env.get("PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE") or {}).get("value")
        if platform != args.platform_namespace:
            errors.append(f"PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE is {platform!r}, want {args.platform_namespace!r}")
        role = env.get("PREVIEW_OPERATOR_SOURCE_READER_ROLE") or {}
        if role.get("value") != args.role:
            errors.append(f"PREVIEW_OPERATOR_SOURCE_READER_ROLE is {role.get('value')!r}, want {args.role!r}")

    if errors:
        for error in errors:
            print(f"source-reader: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"source reader {args.role}: unbound, get/list/watch of secrets and configmaps; no cluster-wide reads")


if __name__ == "__main__":
    main()
