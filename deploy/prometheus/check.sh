#!/usr/bin/env bash
# Checks the observability material under deploy/:
#   - the Prometheus alerts (promtool check rules) and their unit tests
#     (promtool test rules deploy/prometheus/alerts_test.yaml);
#   - the Grafana dashboard: valid JSON, schemaVersion >= 39, the datasource,
#     namespace and pod variables, every panel on the ${datasource} variable,
#     and every query using only the metrics of the metrics contract, filtered
#     on $namespace and $pod, with $__rate_interval ranges;
#   - that deploy/grafana/generate.py (when present) still produces the JSON.
# Needs promtool (Debian package `prometheus`) and python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "check.sh: promtool not found; install it (Debian: apt-get install prometheus) or put it on PATH" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "check.sh: python3 not found" >&2
  exit 1
fi

rules=deploy/prometheus/alerts.yaml
rule_tests=deploy/prometheus/alerts_test.yaml
dashboard=deploy/grafana/dashboards/switchboard.json
generator=deploy/grafana/generate.py

echo "== promtool check rules $rules"
promtool check rules "$rules"

echo "== promtool test rules $rule_tests"
promtool test rules "$rule_tests"

echo "== json.tool $dashboard"
python3 -m json.tool "$dashboard" >/dev/null

if [[ -f "$generator" ]]; then
  echo "== $generator output equals $dashboard"
  if ! python3 "$generator" --stdout | cmp -s - "$dashboard"; then
    echo "check.sh: $dashboard differs from the output of $generator (run: python3 $generator)" >&2
    exit 1
  fi
fi

echo "== dashboard and alert queries"
python3 - "$dashboard" "$rules" <<'PY'
import json
import re
import sys

dashboard_path, rules_path = sys.argv[1], sys.argv[2]

# The metrics contract: every metric a query may use.
COUNTERS_AND_GAUGES = {
    "switchboard_build_info",
    "switchboard_ready",
    "switchboard_connections_open",
    "switchboard_connections_opened_total",
    "switchboard_connections_closed_total",
    "switchboard_client_messages_total",
    "switchboard_server_messages_total",
    "switchboard_protocol_errors_total",
    "switchboard_slow_client_disconnects_total",
    "switchboard_outbound_queue_drops_total",
    "switchboard_room_replicas_serving",
    "switchboard_pending_offers",
    "switchboard_oldest_pending_offer_age_seconds",
    "switchboard_offers_created_total",
    "switchboard_offers_closed_total",
    "switchboard_grpc_requests_total",
    "switchboard_redis_errors_total",
    "switchboard_pubsub_messages_total",
    "switchboard_pubsub_reconnects_total",
    "switchboard_pubsub_subscriptions",
}
HISTOGRAMS = {
    "switchboard_relay_latency_seconds",
    "switchboard_session_setup_seconds",
    "switchboard_offer_answer_seconds",
    "switchboard_grpc_request_duration_seconds",
    "switchboard_redis_command_duration_seconds",
}
ALLOWED = COUNTERS_AND_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
VARIABLES = {"namespace", "pod", "__rate_interval"}

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def selectors(expr):
    """Yields (metric, matchers, range) for each vector selector in a PromQL
    expression; raises ValueError on what this small lexer cannot read."""
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" else 1
            i = j + 1
        elif c == "{":
            # A selector without a metric name: {__name__=...}.
            raise ValueError("selector without a metric name")
        elif re.match(r"[A-Za-z_:]", c):
            m = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*").match(expr, i)
            word, i = m.group(0), m.end()
            rest = expr[i:].lstrip()
            if word in GROUPING:
                if rest.startswith("("):
                    i = expr.index(")", i) + 1
                continue
            if word in KEYWORDS or rest.startswith("("):
                continue  # operator, or a function / aggregation
            if word in AGGREGATIONS and re.match(r"(by|without)\b", rest):
                continue  # sum by (...) (...)
            matchers, rng = "", None
            j = i + (len(expr[i:]) - len(rest))
            if rest.startswith("{"):
                k = j
                while expr[k] != "}":
                    if expr[k] == '"':
                        k += 1
                        while expr[k] != '"':
                            k += 2 if expr[k] == "\\" else 1
                    k += 1
                matchers, i = expr[j + 1:k], k + 1
                rest = expr[i:].lstrip()
                j = i + (len(expr[i:]) - len(rest))
            if rest.startswith("["):
                k = expr.index("]", j)
                rng, i = expr[j + 1:k], k + 1
            yield word, matchers, rng
        elif c == "[":
            # A subquery range: skip it.
            i = expr.index("]", i) + 1
        else:
            i += 1


def check_expr(where, expr, dashboard):
    try:
        sels = list(selectors(expr))
    except (ValueError, IndexError) as e:
        fail(where, f"cannot read {expr!r}: {e}")
        return
    if not sels:
        fail(where, f"no metric in {expr!r}")
    for metric, matchers, rng in sels:
        if metric not in ALLOWED:
            fail(where, f"metric {metric!r} is not in the metrics contract")
        if dashboard:
            for label in ("namespace", "pod"):
                if not re.search(rf'(^|,)\s*{label}=~"\${label}"\s*(,|$)', matchers):
                    fail(where, f'{metric} does not filter {label}=~"${label}"')
            if rng is not None and rng != "$__rate_interval":
                fail(where, f"{metric}[{rng}]: ranges must be [$__rate_interval]")
    if dashboard:
        for var in re.findall(r"\$\{?(\w+)", expr):
            if var not in VARIABLES:
                fail(where, f"uses ${var}; only $namespace, $pod and $__rate_interval are allowed")


# --- the dashboard ------------------------------------------------------------
with open(dashboard_path, encoding="utf-8") as f:
    d = json.load(f)

if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 39:
    fail("dashboard", f"schemaVersion {d.get('schemaVersion')!r} < 39")
if d.get("uid") != "switchboard" or d.get("title") != "Switchboard":
    fail("dashboard", "uid must be 'switchboard' and title 'Switchboard'")
if not d.get("tags"):
    fail("dashboard", "no tags")

variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource")
if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    fail("variable datasource", "must be a datasource variable of type prometheus")
for name, query in (("namespace", "label_values(switchboard_build_info, namespace)"),
                    ("pod", 'label_values(switchboard_build_info{namespace=~"$namespace"}, pod)')):
    v = variables.get(name)
    if not v:
        fail(f"variable {name}", "missing")
        continue
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    if v.get("type") != "query" or q != query:
        fail(f"variable {name}", f"must be a query variable with {query!r}")
    if not (v.get("multi") and v.get("includeAll") and v.get("allValue") == ".*"):
        fail(f"variable {name}", 'must be multi, includeAll, allValue ".*"')

DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
for p in d.get("panels", []):
    panels.append(p)
    panels.extend(p.get("panels", []))  # collapsed rows
exprs = 0
for p in panels:
    where = f"panel {p.get('title')!r}"
    if "gridPos" not in p:
        fail(where, "no gridPos")
    if p.get("type") == "row":
        continue
    if p.get("datasource") != DS:
        fail(where, f"datasource must be {DS}")
    if not p.get("targets"):
        fail(where, "no targets")
    for t in p.get("targets", []):
        if t.get("datasource", DS) != DS:
            fail(where, f"target datasource must be {DS}")
        if not t.get("expr"):
            fail(where, "target without expr")
            continue
        exprs += 1
        check_expr(where, t["expr"], dashboard=True)
rows = [p.get("title") for p in d.get("panels", []) if p.get("type") == "row"]
for title in ("Service overview", "Edges", "Room service", "Redis"):
    if title not in rows:
        fail("dashboard", f"no row {title!r}")

# --- the alerts (their metric names; promtool checked the rest) -------------
try:
    import yaml
except ImportError:
    yaml = None
    print("  (PyYAML missing: alert queries not checked against the metrics contract)")
alerts = 0
if yaml:
    with open(rules_path, encoding="utf-8") as f:
        for group in yaml.safe_load(f)["groups"]:
            for rule in group["rules"]:
                alerts += 1
                name = rule.get("alert") or rule.get("record")
                check_expr(f"rule {name}", str(rule["expr"]), dashboard=False)
                if rule.get("alert"):
                    if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                        fail(f"rule {name}", "severity must be warning or critical")
                    for a in ("summary", "description", "runbook_url"):
                        if not rule.get("annotations", {}).get(a):
                            fail(f"rule {name}", f"no {a} annotation")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"  SUCCESS: {exprs} dashboard queries, {alerts} alert rules")
PY

echo "OK"
