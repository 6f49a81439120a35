#!/usr/bin/env python3
"""Checks the Grafana dashboard ConfigMap in a rendered chart (stdin).

  dashboard.py --none                                   no dashboard ConfigMap at all
  dashboard.py --json FILE --namespace NS [--label K=V] [--annotation K=V] [--documented README]

With --json: exactly one ConfigMap labelled grafana_dashboard, in NS, with label
grafana_dashboard: "1" (and each --label, --annotation); its one key a .json whose content
parses and equals FILE (the chart's dashboard, embedded intact). Then the dashboard itself: a
uid and title; a `datasource` variable of type datasource for Prometheus, and `tenant` and
`repository` query variables over label_values(preview_operator_previews, ...); every panel
and query on ${datasource}; every query names only preview_operator_ metrics and, with
--documented, only metrics that README names (a histogram's _bucket, _sum and _count by the
histogram's name).
"""
import argparse
import json
import re
import sys

import yaml

DATASOURCE = "${datasource}"
METRIC = re.compile(r"preview_operator_[a-z_]+")


def fail(message):
    sys.exit(f"dashboard.py: {message}")


def documented_metrics(path):
    """Every preview_operator_ name the README writes in full."""
    return set(METRIC.findall(open(path).read()))


def check_dashboard(board, documented):
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in board:
            fail(f"the dashboard lacks {key}")
    variables = {v.get("name"): v for v in board["templating"].get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"no Prometheus datasource variable named datasource: {ds}")
    for name in ("tenant", "repository"):
        var = variables.get(name)
        query = (var or {}).get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if not var or var.get("type") != "query" or not re.match(
                rf"label_values\(preview_operator_previews(\{{[^}}]*\}})?, {name}\)$", query or ""):
            fail(f"variable {name} is not label_values(preview_operator_previews, {name}): {var}")
        if var.get("datasource", {}).get("uid") != DATASOURCE:
            fail(f"variable {name} does not query {DATASOURCE}")
    exprs = 0
    for panel in board["panels"]:
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        if (panel.get("datasource") or {}).get("uid") != DATASOURCE:
            fail(f"panel {title!r} does not use {DATASOURCE}")
        if not panel.get("targets"):
            fail(f"panel {title!r} has no query")
        for target in panel["targets"]:
            if (target.get("datasource") or {}).get("uid") != DATASOURCE:
                fail(f"a query of panel {title!r} does not use {DATASOURCE}")
            names = METRIC.findall(target.get("expr", ""))
            if not names:
                fail(f"a query of panel {title!r} names no preview_operator_ metric: {target.get('expr')!r}")
            exprs += 1
            if documented is None:
                continue
            for name in names:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name not in documented and base not in documented:
                    fail(f"panel {title!r} queries {name}, which the README does not document")
    return exprs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--none", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--namespace")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--annotation", action="append", default=[])
    parser.add_argument("--documented")
    args = parser.parse_args()

    maps = [d for d in yaml.safe_load_all(sys.stdin)
            if d and d.get("kind") == "ConfigMap"
            and "grafana_dashboard" in (d.get("metadata", {}).get("labels") or {})]
    if args.none:
        if maps:
            fail(f"a dashboard ConfigMap rendered although grafanaDashboard.enabled is off: {maps[0]['metadata']['name']}")
        return
    if len(maps) != 1:
        fail(f"want exactly one dashboard ConfigMap, found {len(maps)}")
    meta = maps[0]["metadata"]
    if meta.get("namespace") != args.namespace:
        fail(f"the dashboard ConfigMap is in {meta.get('namespace')}, want {args.namespace}")
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    want_labels = {"grafana_dashboard": "1"}
    want_labels.update(dict(pair.split("=", 1) for pair in args.label))
    for key, value in want_labels.items():
        if labels.get(key) != value:
            fail(f"label {key}={labels.get(key)!r}, want {value!r}")
    for key, value in (pair.split("=", 1) for pair in args.annotation):
        if annotations.get(key) != value:
            fail(f"annotation {key}={annotations.get(key)!r}, want {value!r}")
    data = maps[0].get("data") or {}
    if len(data) != 1 or not next(iter(data)).endswith(".json"):
        fail(f"want one .json key in the ConfigMap, found {sorted(data)}")
    try:
        board = json.loads(next(iter(data.values())))
    except json.JSONDecodeError as e:
        fail(f"the embedded dashboard is not JSON: {e}")
    if board != json.load(open(args.json)):
        fail(f"the embedded dashboard differs from {args.json}")
    documented = documented_metrics(args.documented) if args.documented else None
    exprs = check_dashboard(board, documented)
    print(f"dashboard {board['uid']}: {len(board['panels'])} panels, {exprs} queries")


if __name__ == "__main__":
    main()
