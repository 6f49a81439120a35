#!/usr/bin/env python3
"""Checks, in a rendered chart, that the operator reads pods' logs only in preview namespaces.

Reads `helm template` output (YAML, several documents) on stdin.
  log-reader.py --release NAME --role NAME [--also-bindable ROLE...]  (testLogs.enabled: the default)
  log-reader.py --release NAME --none [--also-bindable ROLE...]       (testLogs.enabled=false)

With --role: the ClusterRole NAME grants exactly get of pods/log and nothing else; no binding of
the chart binds it (the operator binds its own ServiceAccount to it in each preview namespace);
the operator's `bind` rule names exactly `view`, NAME and the --also-bindable roles (the Flux
applier: flux-applier.py checks it); the Deployment passes NAME in
PREVIEW_OPERATOR_LOG_READER_ROLE. With --none: no such role, `bind` on `view` and the
--also-bindable roles only, no variable.
Either way no ClusterRole bound cluster-wide by the chart, and no Role, grants pods/log.
"""
import argparse
import sys

import yaml


def grants_logs(rules):
    return any(
        set(r.get("apiGroups") or []) & {"", "*"} and set(r.get("resources") or []) & {"pods/log", "*"}
        for r in rules or []
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", required=True)
    parser.add_argument("--role")
    parser.add_argument("--none", action="store_true")
    parser.add_argument("--also-bindable", action="append", default=[])
    args = parser.parse_args()
    if bool(args.role) == args.none:
        sys.exit("log-reader: --role or --none")
    docs = [d for d in yaml.safe_load_all(sys.stdin) if isinstance(d, dict)]
    errors = []
    of_kind = lambda kind: [d for d in docs if d.get("kind") == kind]  # noqa: E731
    cluster_roles = {d["metadata"]["name"]: d for d in of_kind("ClusterRole")}

    readers = [n for n, r in cluster_roles.items() if grants_logs(r.get("rules"))]
    want_readers = [args.role] if args.role else []
    if readers != want_readers:
        errors.append(f"ClusterRoles granting pods/log: {readers}, want {want_readers}")
    if args.role in cluster_roles:
        rules = cluster_roles[args.role].get("rules")
        if rules != [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]:
            errors.append(f"ClusterRole {args.role} has rules {rules}, want get pods/log only")
    for role in of_kind("Role"):
        if grants_logs(role.get("rules")):
            errors.append(f'Role {role["metadata"]["name"]} grants pods/log')
    for binding in of_kind("ClusterRoleBinding") + of_kind("RoleBinding"):
        ref = binding.get("roleRef") or {}
        if ref.get("name") in readers:
            errors.append(f'{binding["kind"]} {binding["metadata"]["name"]} binds {ref.get("name")}: only the operator binds it, per preview namespace')

    operator = cluster_roles.get(args.release)
    if operator is None:
        errors.append(f"no ClusterRole {args.release}")
    else:
        binds = [r for r in operator["rules"] if "bind" in r.get("verbs", [])]
        names = [n for r in binds for n in r.get("resourceNames") or ["<any>"]]
        want = ["view"] + want_readers + args.also_bindable
        if names != want or any(r.get("resources") != ["clusterroles"] for r in binds):
            errors.append(f"the operator may bind {names}, want the ClusterRoles {want}")

    deployment = next((d for d in of_kind("Deployment")), None)
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    got = env.get("PREVIEW_OPERATOR_LOG_READER_ROLE")
    if got != args.role:
        errors.append(f"PREVIEW_OPERATOR_LOG_READER_ROLE is {got!r}, want {args.role!r}")

    if errors:
        for error in errors:
            print(f"log-reader: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
