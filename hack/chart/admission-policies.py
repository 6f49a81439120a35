#!/usr/bin/env python3
"""Checks the chart's admission policies in a `helm template` render read from stdin.

  admission-policies.py --operator system:serviceaccount:NS:SA [--resource deployments.apps ...]
      [--trusted NAME ...] [--flux-applier ROLE]
  admission-policies.py --none

With --operator: six ValidatingAdmissionPolicies (operator writes only in managed namespaces,
operator changes only its own namespaces, reserved labels, operator RoleBindings pinned, platform
Secret copies usable by pods only as image pull secrets, preview hosts), each with failurePolicy
Fail (Ignore for the hosts policy, which depends on the PreviewClass kind), a messageExpression on every validation and a binding with validationActions [Deny]; the
first two and the RoleBinding one with a matchCondition naming the operator's ServiceAccount.
Every --resource (resource or resource.group) is matched by the first and the third,
subresources by the first; Kubernetes' controllers are exempt from the third by name (no
kube-system ServiceAccount prefix), like every --trusted user or group. The pod policy matches
pods and their ephemeral containers in managed namespaces; the hosts policy Ingresses and
Gateway API routes outside them, once per PreviewClass (paramRef selector {}, Allow when there
is none). With --flux-applier (flux.enabled): a seventh policy, preview-content, for requests of
the ServiceAccount preview-applier of the request's own namespace in managed namespaces, on pods,
every workload kind with a pod template, Services, Secrets and Ingresses (CREATE and UPDATE, at
v1 so that the API server type-checks it; never a subresource such as scale); the RoleBinding
policy lets ROLE be bound only to that ServiceAccount; the first and the third match the Flux
kinds and ServiceAccounts whatever --resource says. Without it: no preview-content policy and
no word of a Flux applier. With --none: no policy and no binding at all.
"""
import argparse
import sys

import yaml

SUFFIXES = {
    "managed": "-managed-namespaces-only",
    "namespaces": "-own-namespaces-only",
    "labels": "-reserved-labels",
    "bindings": "-role-bindings",
    "pods": "-platform-secrets-pull-only",
    "hosts": "-preview-hosts",
}
CONTENT = "-preview-content"
APPLIER = "preview-applier"
# What the preview-content policy must match, by group.
CONTENT_KINDS = {
    "": ["pods", "replicationcontrollers", "services", "secrets"],
    "apps": ["deployments", "statefulsets", "daemonsets", "replicasets"],
    "batch": ["jobs", "cronjobs"],
    "networking.k8s.io": ["ingresses"],
}
FLUX_KINDS = [
    "serviceaccounts", "helmreleases.helm.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io", "helmrepositories.source.toolkit.fluxcd.io",
    "ocirepositories.source.toolkit.fluxcd.io",
]
# The policies that apply to the operator's ServiceAccount only.
OPERATOR_ONLY = ("managed", "namespaces", "bindings")
MANAGED = {"key": "app.kubernetes.io/managed-by", "operator": "In", "values": ["preview-operator"]}


def fail(msg):
    print(f"admission-policies: {msg}", file=sys.stderr)
    sys.exit(1)


def matched(policy, group, resource, operations):
    """True when one resourceRule matches group/resource for every operation."""
    for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            if all(op in rule["operations"] for op in operations):
                return True
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--operator")
    parser.add_argument("--resource", action="append", default=[])
    parser.add_argument("--trusted", action="append", default=[])
    parser.add_argument("--none", action="store_true")
    parser.add_argument("--flux-applier")
    args = parser.parse_args()

    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    if args.none:
        if policies or bindings:
            fail(f"expected no admission policy, got {sorted(policies)} and {len(bindings)} binding(s)")
        return
    if not args.operator:
        fail("--operator or --none is required")

    suffixes = dict(SUFFIXES, content=CONTENT) if args.flux_applier else SUFFIXES
    found = {}
    for key, suffix in suffixes.items():
        names = [n for n in policies if n.endswith(suffix)]
        if len(names) != 1:
            fail(f"expected one policy named *{suffix}, got {names}")
        found[key] = policies[names[0]]
    if len(policies) != len(suffixes):
        fail(f"unexpected policies: {sorted(policies)}")

    for name, policy in policies.items():
        spec = policy["spec"]
        # The hosts policy fails open: without the PreviewClass kind it could not be configured
        # and would refuse every Ingress of the cluster.
        want = "Ignore" if name.endswith(SUFFIXES["hosts"]) else "Fail"
        if spec.get("failurePolicy") != want:
            fail(f"{name}: failurePolicy must be {want}")
        for validation in spec.get("validations", []):
            if not validation.get("messageExpression") or not validation.get("message"):
                fail(f"{name}: every validation needs a message and a messageExpression")
        mine = [b for b in bindings if b["spec"]["policyName"] == name]
        if len(mine) != 1 or mine[0]["spec"].get("validationActions") != ["Deny"]:
            fail(f"{name}: needs exactly one binding with validationActions [Deny]")

    for key in OPERATOR_ONLY:
        conditions = " ".join(c["expression"] for c in found[key]["spec"].get("matchConditions", []))
        if f"'{args.operator}'" not in conditions and f'"{args.operator}"' not in conditions:
            fail(f"{key}: its matchConditions do not name the operator {args.operator}")

    write = ["CREATE", "UPDATE", "DELETE"]
    for entry in args.resource + (FLUX_KINDS if args.flux_applier else []):
        resource, _, group = entry.partition(".")
        if not matched(found["managed"], group, resource, write):
            fail(f"the managed-namespaces policy does not match {write} of {entry}")
        if not matched(found["managed"], group, resource + "/*", write):
            fail(f"the managed-namespaces policy does not match the subresources of {entry}")
        if not matched(found["labels"], group, resource, ["CREATE", "UPDATE"]):
            fail(f"the reserved-labels policy does not match {entry}")
    if not matched(found["namespaces"], "", "namespaces", write):
        fail("the own-namespaces policy does not match namespaces")
    if not matched(found["labels"], "", "namespaces", ["CREATE", "UPDATE"]):
        fail("the reserved-labels policy does not match namespaces")
    exempt = " ".join(c["expression"] for c in found["labels"]["spec"]["matchConditions"])
    for who in ["system:masters", "system:kube-controller-manager", '"system:serviceaccount:kube-system:statefulset-controller"']:
        if who not in exempt:
            fail(f"the reserved-labels policy does not exempt {who}")
    if "startsWith" in exempt or '"system:serviceaccount:kube-system:"' in exempt:
        fail("the reserved-labels policy exempts ServiceAccounts by prefix: name the controllers")

    if not matched(found["bindings"], "rbac.authorization.k8s.io", "rolebindings", ["CREATE", "UPDATE"]):
        fail("the role-bindings policy does not match rolebindings")
    pods = found["pods"]["spec"]
    for resource in ("pods", "pods/ephemeralcontainers"):
        if not matched(found["pods"], "", resource, ["CREATE", "UPDATE"]):
            fail(f"the platform-secrets policy does not match {resource}")
    if pods["matchConstraints"].get("namespaceSelector") != {"matchLabels": {MANAGED["key"]: "preview-operator"}}:
        fail("the platform-secrets policy must select the managed namespaces")
    hosts = found["hosts"]["spec"]
    if hosts.get("paramKind") != {"apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass"}:
        fail(f"the preview-hosts policy's paramKind is {hosts.get('paramKind')}, want PreviewClass")
    if not matched(found["hosts"], "networking.k8s.io", "ingresses", ["CREATE", "UPDATE"]) or not matched(
        found["hosts"], "gateway.networking.k8s.io", "httproutes", ["CREATE", "UPDATE"]
    ):
        fail("the preview-hosts policy must match Ingresses and HTTPRoutes")
    if hosts["matchConstraints"].get("namespaceSelector") != {"matchExpressions": [dict(MANAGED, operator="NotIn")]}:
        fail("the preview-hosts policy must select the namespaces the operator does not manage")
    binding = next(b for b in bindings if b["spec"]["policyName"] == found["hosts"]["metadata"]["name"])
    if binding["spec"].get("paramRef") != {"selector": {}, "parameterNotFoundAction": "Allow"}:
        fail(f"the preview-hosts binding must evaluate every class: paramRef {binding['spec'].get('paramRef')}")
    bindings_text = yaml.safe_dump(found["bindings"]["spec"])
    if args.flux_applier:
        check_content(found["content"]["spec"])
        roles = " ".join(v["expression"] for v in found["bindings"]["spec"]["validations"])
        if f"'{args.flux_applier}'" not in roles or f"'{APPLIER}'" not in roles or "request.namespace" not in roles:
            fail(f"the role-bindings policy must pin {args.flux_applier} to ServiceAccount {APPLIER} of the RoleBinding's namespace")
    elif "flux-applier" in bindings_text:
        fail("flux.enabled=false, yet the role-bindings policy names a Flux applier")
    for who in args.trusted:
        if f'"{who}"' not in exempt:
            fail(f"the reserved-labels policy does not exempt the trusted {who}")


def check_content(spec):
    """The preview-content policy: Fail, the applier of the request's namespace only, in managed
    namespaces, every kind that carries a pod spec, hosts, Service types or Secret types, at v1,
    no subresource."""
    if spec["matchConstraints"].get("namespaceSelector") != {"matchLabels": {MANAGED["key"]: "preview-operator"}}:
        fail("the preview-content policy must select the managed namespaces")
    conditions = " ".join(c["expression"] for c in spec.get("matchConditions", []))
    if f"'system:serviceaccount:' + request.namespace + ':{APPLIER}'" not in conditions:
        fail(f"the preview-content policy must match the ServiceAccount {APPLIER} of the request's namespace, got: {conditions}")
    for group, resources in CONTENT_KINDS.items():
        for resource in resources:
            if not any(group in r["apiGroups"] and resource in r["resources"] for r in spec["matchConstraints"]["resourceRules"]):
                fail(f"the preview-content policy does not match {resource} ({group or 'core'})")
    for rule in spec["matchConstraints"]["resourceRules"]:
        if rule["operations"] != ["CREATE", "UPDATE"] or rule["apiVersions"] != ["v1"]:
            fail(f"the preview-content policy: want CREATE and UPDATE at v1 (type-checked), got {rule}")
        if any("/" in r or r == "*" for r in rule["resources"]):
            fail(f"the preview-content policy must not match subresources (a Scale has no pod spec): {rule}")
    if spec["matchConstraints"].get("matchPolicy", "Equivalent") != "Equivalent":
        fail("the preview-content policy must match other versions too (matchPolicy Equivalent)")
    text = yaml.safe_dump(spec)
    for annotation in ("preview.dev/allowed-registries", "preview.dev/platform-secrets", "preview.dev/host"):
        if annotation not in text:
            fail(f"the preview-content policy does not read the namespace annotation {annotation}")


if __name__ == "__main__":
    main()
