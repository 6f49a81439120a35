#!/usr/bin/env python3
"""Checks, in a rendered chart, the identity Flux applies previews' charts with, and the
operator's rights for Flux delivery.

Reads `helm template` output (YAML, several documents), or the live objects as a List
(`kubectl get clusterrole/R clusterrole/R-flux-applier deployment/R -o yaml`), on stdin.
  flux-applier.py --release NAME --role NAME [--edit FILE]   (flux.enabled: the default)
  flux-applier.py --release NAME --none                      (flux.enabled=false)

With --role: the ClusterRole NAME (written out, not aggregated) grants exactly APPLIER below:
what the built-in `edit` grants in a namespace minus NetworkPolicies, ResourceQuotas,
LimitRanges, RBAC, impersonation, ServiceAccount tokens, exec/attach/port-forward/proxy, logs
and evictions (FORBIDDEN names them, so a failure says why); no binding of the chart binds it
(the operator binds it per preview namespace); the operator (ClusterRole NAME of --release) may
bind it, and write the Flux kinds and ServiceAccounts and scale Deployments and StatefulSets;
the Deployment passes NAME in PREVIEW_OPERATOR_FLUX_APPLIER_ROLE. With --edit FILE (the rig's
`kubectl get clusterrole edit -o json`): everything NAME grants, edit grants too. With --none:
no such role, no bind on it, no Flux kinds or ServiceAccounts for the operator, no variable.
"""
import argparse
import json
import sys

import yaml

READ = ("get", "list", "watch")
WRITE = READ + ("create", "update", "patch", "delete")
WRITTEN = {
    "": ["configmaps", "persistentvolumeclaims", "pods", "replicationcontrollers", "replicationcontrollers/scale",
         "secrets", "services", "serviceaccounts"],
    "apps": ["deployments", "deployments/scale", "statefulsets", "statefulsets/scale", "daemonsets", "replicasets",
             "replicasets/scale"],
    "batch": ["jobs", "cronjobs"],
    "autoscaling": ["horizontalpodautoscalers"],
    "policy": ["poddisruptionbudgets"],
    "networking.k8s.io": ["ingresses"],
}
READ_ONLY = {"": ["endpoints", "events"], "discovery.k8s.io": ["endpointslices"]}
APPLIER = {(g, r, v) for g, rs in WRITTEN.items() for r in rs for v in WRITE} | {
    (g, r, v) for g, rs in READ_ONLY.items() for r in rs for v in READ
}
# (group, resource or None for the whole group, verb or None for every verb): never.
FORBIDDEN = [
    ("networking.k8s.io", "networkpolicies", None, "NetworkPolicies are the preview's isolation"),
    ("", "resourcequotas", None, "the quota is the preview's hardening"),
    ("", "limitranges", None, "the LimitRange is the preview's hardening"),
    ("rbac.authorization.k8s.io", None, None, "a chart must not grant rights"),
    ("", "serviceaccounts/token", None, "a chart must not mint tokens"),
    (None, None, "impersonate", "a chart must not act as another identity"),
    (None, None, "escalate", "no escalation"),
    (None, None, "bind", "no binding"),
    ("", "pods/exec", None, "no exec"),
    ("", "pods/attach", None, "no attach"),
    ("", "pods/portforward", None, "no port-forward"),
    ("", "pods/proxy", None, "no proxy"),
    ("", "services/proxy", None, "no proxy"),
    ("", "pods/log", None, "logs are the operator's log reader's"),
    ("", "namespaces", None, "the namespace is the operator's"),
    ("", "endpoints", "create", "hand-written endpoints could point anywhere"),
    ("helm.toolkit.fluxcd.io", None, None, "a chart must not create Flux objects (another identity, another source)"),
    ("kustomize.toolkit.fluxcd.io", None, None, "a chart must not create Flux objects"),
    ("source.toolkit.fluxcd.io", None, None, "a chart must not create Flux objects"),
]
FLUX_KINDS = {
    "helm.toolkit.fluxcd.io": ["helmreleases"],
    "kustomize.toolkit.fluxcd.io": ["kustomizations"],
    "source.toolkit.fluxcd.io": ["gitrepositories", "helmrepositories", "ocirepositories"],
}
OPERATOR = {(g, r, v) for g, rs in FLUX_KINDS.items() for r in rs for v in READ + ("create", "patch", "delete")} | {
    ("", "serviceaccounts", v) for v in ("get", "list", "watch", "create", "patch", "delete")
} | {("apps", r, "patch") for r in ("deployments/scale", "statefulsets/scale")}


def grants(rules):
    """The (group, resource, verb) triples of rules without resourceNames; '*' kept as is."""
    out = set()
    for rule in rules or []:
        if rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb))
    return out


def covered(triple, granted):
    """Whether granted (with its wildcards) includes the triple."""
    group, resource, verb = triple
    return any(
        g in (group, "*") and r in (resource, "*") and v in (verb, "*") for g, r, v in granted
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", required=True)
    parser.add_argument("--role")
    parser.add_argument("--edit")
    parser.add_argument("--none", action="store_true")
    args = parser.parse_args()
    if bool(args.role) == args.none:
        sys.exit("flux-applier: --role or --none")
    docs = [d for d in yaml.safe_load_all(sys.stdin) if isinstance(d, dict)]
    # kubectl get -o yaml of several objects: a List.
    docs = [i for d in docs for i in (d.get("items") or [] if d.get("kind") == "List" else [d])]
    errors = []
    of_kind = lambda kind: [d for d in docs if d.get("kind") == kind]  # noqa: E731
    cluster_roles = {d["metadata"]["name"]: d for d in of_kind("ClusterRole")}
    appliers = [n for n in cluster_roles if n.endswith("-flux-applier")]
    want = [args.role] if args.role else []
    if appliers != want:
        errors.append(f"ClusterRoles *-flux-applier: {appliers}, want {want}")

    role = cluster_roles.get(args.role) if args.role else None
    if role is not None:
        meta = role["metadata"]
        if role.get("aggregationRule") or any(k.startswith("rbac.authorization.k8s.io/aggregate-to") for k in meta.get("labels", {})):
            errors.append(f"{args.role} must be written out: no aggregationRule, not aggregated into other roles")
        rules = role.get("rules") or []
        for rule in rules:
            if rule.get("nonResourceURLs") or rule.get("resourceNames"):
                errors.append(f"{args.role}: a rule with nonResourceURLs or resourceNames: {rule}")
        granted = grants(rules)
        wildcards = sorted(t for t in granted if "*" in t)
        if wildcards:
            errors.append(f"{args.role} uses wildcards: {wildcards}")
        for group, resource, verb, why in FORBIDDEN:
            hits = sorted(
                t for t in granted
                if (group is None or t[0] == group) and (resource is None or t[1] == resource)
                and (verb is None or t[2] == verb)
            )
            if hits:
                errors.append(f"{args.role} grants {hits}: {why}")
        if granted - APPLIER:
            errors.append(f"{args.role} grants more than edit minus the hardening: {sorted(granted - APPLIER)}")
        if APPLIER - granted:
            errors.append(f"{args.role} lacks what charts need to apply: {sorted(APPLIER - granted)}")
        if args.edit:
            with open(args.edit) as f:
                edit = grants(json.load(f).get("rules"))
            beyond = sorted(t for t in granted if not covered(t, edit))
            if beyond:
                errors.append(f"{args.role} grants what the built-in edit does not: {beyond}")
    for binding in of_kind("ClusterRoleBinding") + of_kind("RoleBinding"):
        ref = (binding.get("roleRef") or {}).get("name")
        if ref in appliers:
            errors.append(f'{binding["kind"]} {binding["metadata"]["name"]} binds {ref}: only the operator binds it, per preview namespace')

    operator = cluster_roles.get(args.release)
    if operator is None:
        errors.append(f"no ClusterRole {args.release}")
    else:
        bindable = [n for r in operator["rules"] if "bind" in r.get("verbs", []) for n in r.get("resourceNames") or ["<any>"]]
        if bool(args.role) != (args.role in bindable) or any(n.endswith("-flux-applier") and n != args.role for n in bindable):
            errors.append(f"the operator may bind {bindable}; want {args.role or 'no Flux applier'} among them")
        granted = grants(operator["rules"])
        if args.role and OPERATOR - granted:
            errors.append(f"the operator lacks for Flux delivery: {sorted(OPERATOR - granted)}")
        # Without Flux: none of it (Deployments and StatefulSets it still writes, for its own
        # services and dependencies, without scale).
        flux_only = sorted(t for t in granted if t in OPERATOR or t[0].endswith(".fluxcd.io"))
        if not args.role and flux_only:
            errors.append(f"flux.enabled=false, yet the operator may {flux_only}")

    deployment = next((d for d in of_kind("Deployment")), None)
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    got = env.get("PREVIEW_OPERATOR_FLUX_APPLIER_ROLE")
    if got != args.role:
        errors.append(f"PREVIEW_OPERATOR_FLUX_APPLIER_ROLE is {got!r}, want {args.role!r}")

    if errors:
        for error in errors:
            print(f"flux-applier: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
