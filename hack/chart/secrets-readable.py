#!/usr/bin/env python3
"""Fails when a container of a rendered chart mounts a Secret it cannot read.

Reads `helm template` output (YAML, several documents) on stdin. For every pod template
(Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod) and every container, each file of a
mounted Secret volume (or a projected volume's Secret source) must be readable by the user the
container runs as. The kubelet writes those files owned by root (uid 0) and, when the pod sets
fsGroup, by the fsGroup's group; their mode is the item's `mode`, else the volume's
`defaultMode`, else 0644. A file is readable when its mode grants read to:
  - others; or
  - the group, and the process is in the file's group (fsGroup when set, else gid 0): its
    runAsGroup, fsGroup (added to every container) or one of supplementalGroups; or
  - the owner, and the process runs as uid 0 (root without CAP_DAC_OVERRIDE still needs it).
The kubelet may widen a mode on its own when fsGroup is set; the rule does not count on that.
A container whose uid is not set anywhere (runAsUser of the container or pod) cannot be
checked and counts as a failure: the image's USER is not visible in the chart.

Self-test: `secrets-readable.py --self-test` checks the rule on small fixtures.
"""
import sys

import yaml

POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_specs(docs):
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") not in POD_TEMPLATE_PATHS:
            continue
        spec = doc
        for key in POD_TEMPLATE_PATHS[doc["kind"]]:
            spec = (spec or {}).get(key)
        if spec:
            yield f'{doc["kind"]}/{doc.get("metadata", {}).get("name", "?")}', spec


def secret_files(volume):
    """(description, mode) of every file a Secret-backed volume holds, as far as known."""
    if "secret" in volume:
        secret = volume["secret"] or {}
        default = secret.get("defaultMode", 0o644)
        yield f'secret {secret.get("secretName", "?")} (defaultMode)', default
        for item in secret.get("items") or []:
            yield f'secret {secret.get("secretName", "?")} key {item.get("key")}', item.get("mode", default)
    elif "projected" in volume:
        projected = volume["projected"] or {}
        default = projected.get("defaultMode", 0o644)
        for source in projected.get("sources") or []:
            secret = source.get("secret")
            if secret is None:
                continue
            yield f'projected secret {secret.get("name", "?")} (defaultMode)', default
            for item in secret.get("items") or []:
                yield f'projected secret {secret.get("name", "?")} key {item.get("key")}', item.get("mode", default)


def readable(mode, uid, gid, fs_group, supplemental):
    if mode & 0o004:
        return True
    file_group = fs_group if fs_group is not None else 0
    groups = {g for g in [gid, fs_group, *supplemental] if g is not None}
    if mode & 0o040 and file_group in groups:
        return True
    return bool(mode & 0o400) and uid == 0


def problems(docs):
    found = []
    for where, spec in pod_specs(docs):
        pod_sc = spec.get("securityContext") or {}
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        for container in containers:
            sc = container.get("securityContext") or {}
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
            fs_group = pod_sc.get("fsGroup")
            supplemental = pod_sc.get("supplementalGroups") or []
            for mount in container.get("volumeMounts") or []:
                volume = volumes.get(mount.get("name"))
                if volume is None:
                    continue
                for what, mode in secret_files(volume):
                    who = f'{where} container {container.get("name")} mount {mount.get("mountPath")}: {what}'
                    if uid is None:
                        found.append(f"{who}: no runAsUser, so who reads it cannot be checked")
                    elif not readable(mode, uid, gid, fs_group, supplemental):
                        found.append(
                            f"{who}: mode {mode:04o} is unreadable for uid {uid} gid {gid} "
                            f"(fsGroup {fs_group}, supplementalGroups {supplemental})"
                        )
    return found


def self_test():
    def deployment(mode, fs_group=None, uid=65532, gid=65532):
        pod_sc = {"runAsUser": uid, "runAsGroup": gid}
        if fs_group is not None:
            pod_sc["fsGroup"] = fs_group
        return [{
            "kind": "Deployment",
            "metadata": {"name": "t"},
            "spec": {"template": {"spec": {
                "securityContext": pod_sc,
                "containers": [{"name": "c", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                "volumes": [{"name": "s", "secret": {"secretName": "x", "defaultMode": mode}}],
            }}},
        }]

    cases = [
        (deployment(0o400), False),              # the chart before the fix: root-owned, owner-only
        (deployment(0o440), False),              # group-readable, but the group is root's
        (deployment(0o400, fs_group=65532), False),  # only the kubelet's widening would save it
        (deployment(0o440, fs_group=65532), True),
        (deployment(0o440, fs_group=1000), True),    # fsGroup is added to every container
        (deployment(0o444), True),
        (deployment(0o400, uid=0, gid=0), True),
        (deployment(0o440, uid=None), False),        # unknown user
    ]
    failed = 0
    for i, (docs, want) in enumerate(cases):
        got = not problems(docs)
        if got != want:
            print(f"self-test case {i}: readable={got}, want {want}", file=sys.stderr)
            failed += 1
    return failed


def main():
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(1 if self_test() else 0)
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    found = problems(docs)
    for problem in found:
        print(f"unreadable Secret: {problem}", file=sys.stderr)
    mounts = sum(1 for _, spec in pod_specs(docs) for v in spec.get("volumes") or [] if "secret" in v or "projected" in v)
    if found:
        sys.exit(1)
    print(f"{mounts} Secret volume(s) checked, all readable by their containers")


if __name__ == "__main__":
    main()
