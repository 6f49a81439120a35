#!/usr/bin/env python3
"""Checks the chart's admission policies in a `helm template` render read from stdin.

  admission-policies.py --operator system:serviceaccount:NS:SA [--resource deployments.apps ...]
      [--trusted NAME ...]
  admission-policies.py --none

With --operator: three ValidatingAdmissionPolicies (operator writes only in managed namespaces,
operator changes only its own namespaces, reserved labels), each with failurePolicy Fail, a
matchCondition naming the operator's ServiceAccount, a messageExpression on every validation
and a binding with validationActions [Deny]; every --resource (resource or resource.group) is
matched by the first and the third, subresources by the first; every --trusted user or group is
exempt from the third. With --none: no policy and no binding at all.
"""
import argparse
import sys

import yaml

SUFFIXES = {
    "managed": "-managed-namespaces-only",
    "namespaces": "-own-namespaces-only",
    "labels": "-reserved-labels",
}


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

    found = {}
    for key, suffix in SUFFIXES.items():
        names = [n for n in policies if n.endswith(suffix)]
        if len(names) != 1:
            fail(f"expected one policy named *{suffix}, got {names}")
        found[key] = policies[names[0]]
    if len(policies) != len(SUFFIXES):
        fail(f"unexpected policies: {sorted(policies)}")

    for name, policy in policies.items():
        spec = policy["spec"]
        if spec.get("failurePolicy") != "Fail":
            fail(f"{name}: failurePolicy must be Fail")
        for validation in spec.get("validations", []):
            if not validation.get("messageExpression") or not validation.get("message"):
                fail(f"{name}: every validation needs a message and a messageExpression")
        conditions = " ".join(c["expression"] for c in spec.get("matchConditions", []))
        if f"'{args.operator}'" not in conditions and f'"{args.operator}"' not in conditions:
            fail(f"{name}: its matchConditions do not name the operator {args.operator}")
        mine = [b for b in bindings if b["spec"]["policyName"] == name]
        if len(mine) != 1 or mine[0]["spec"].get("validationActions") != ["Deny"]:
            fail(f"{name}: needs exactly one binding with validationActions [Deny]")

    write = ["CREATE", "UPDATE", "DELETE"]
    for entry in args.resource:
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
    for who in ["system:masters", "system:kube-controller-manager", "system:serviceaccount:kube-system:"]:
        if who not in exempt:
            fail(f"the reserved-labels policy does not exempt {who}")
    for who in args.trusted:
        if f'"{who}"' not in exempt:
            fail(f"the reserved-labels policy does not exempt the trusted {who}")


if __name__ == "__main__":
    main()
