#!/usr/bin/env python3
"""Generates dashboards/switchboard.json (the Switchboard Grafana dashboard).

    python3 deploy/grafana/generate.py            # rewrite the JSON
    python3 deploy/grafana/generate.py --stdout   # print it instead

The JSON is what gets deployed; this script is only a convenient way to edit
it. deploy/prometheus/check.sh fails when the two disagree. Metric names and
labels follow the Switchboard metrics contract; every query
filters on the $namespace and $pod variables and every range is
$__rate_interval.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", pod=~"$pod"'
RI = "$__rate_interval"


def sel(metric, extra=""):
    """`metric{extra, namespace=~"$namespace", pod=~"$pod"}`."""
    matchers = f"{extra}, {SEL}" if extra else SEL
    return f"{metric}{{{matchers}}}"


def rate(metric, extra=""):
    return f"rate({sel(metric, extra)}[{RI}])"


def sum_rate(metric, by=None, extra=""):
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}({rate(metric, extra)})"


def quantile(q, metric, by=None, extra=""):
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket', extra)}))"


def target(expr, legend, ref):
    return {"datasource": DS, "editorMode": "code", "expr": expr,
            "legendFormat": legend, "range": True, "refId": ref}


class Layout:
    """Places panels left to right, rows of panels top to bottom."""

    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.line_height = 0

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "id": self._id(), "title": title,
                            "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def _newline(self):
        if self.x:
            self.x = 0
            self.y += self.line_height
            self.line_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self._newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_height = max(self.line_height, h)
        return pos

    def _targets(self, queries):
        return [target(expr, legend, chr(ord("A") + i))
                for i, (expr, legend) in enumerate(queries)]

    def stat(self, title, description, queries, unit, w=4, h=5, thresholds=None,
             mappings=None):
        self.panels.append({
            "type": "stat", "id": self._id(), "title": title,
            "description": description, "datasource": DS,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "thresholds": {"mode": "absolute", "steps": thresholds or [
                    {"color": "green", "value": None}]},
            }, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "orientation": "auto", "textMode": "auto"},
            "targets": self._targets(queries),
        })

    def timeseries(self, title, description, queries, unit, w=8, h=8, stack=False,
                   min_zero=True, overrides=None):
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                  "showPoints": "never", "spanNulls": False,
                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        defaults = {"unit": unit, "custom": custom}
        if min_zero:
            defaults["min"] = 0
        self.panels.append({
            "type": "timeseries", "id": self._id(), "title": title,
            "description": description, "datasource": DS,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": self._targets(queries),
        })


def panels():
    d = Layout()

    d.row("Service overview")
    d.stat("Open connections", "WebSocket connections open now, all edges.",
           [(f"sum({sel('switchboard_connections_open')})", "open")], "short")
    d.stat("Sessions / s", "WebSocket connections accepted per second, all edges.",
           [(sum_rate("switchboard_connections_opened_total"), "sessions/s")], "reqps")
    d.stat("Pending offers", "Pending offers in the store (sampled by every room process: max, not sum).",
           [(f"max({sel('switchboard_pending_offers')})", "pending")], "short")
    d.stat("Oldest pending offer", "Age of the oldest pending offer (0 when none).",
           [(f"max({sel('switchboard_oldest_pending_offer_age_seconds')})", "age")], "s")
    d.stat("Offer → answer p50", "Offer created → answer claimed, median.",
           [(quantile(0.5, "switchboard_offer_answer_seconds"), "p50")], "s")
    d.stat("Offer → answer p99", "Offer created → answer claimed, 99th percentile.",
           [(quantile(0.99, "switchboard_offer_answer_seconds"), "p99")], "s")
    d.timeseries("Protocol errors by code", "`error` frames sent to clients, per second, by code.",
                 [(sum_rate("switchboard_protocol_errors_total", "code"), "{{code}}")], "reqps")
    d.timeseries("Offers created / closed", "Offers created, and pending offers closed by reason, per second.",
                 [(sum_rate("switchboard_offers_created_total"), "created"),
                  (sum_rate("switchboard_offers_closed_total", "reason"), "closed: {{reason}}")], "reqps")
    d.timeseries("Pending offers and oldest age", "Pending offers (max over room processes) and the age of the oldest one.",
                 [(f"max({sel('switchboard_pending_offers')})", "pending offers"),
                  (f"max({sel('switchboard_oldest_pending_offer_age_seconds')})", "oldest age")], "short",
                 overrides=[{"matcher": {"id": "byName", "options": "oldest age"},
                             "properties": [{"id": "unit", "value": "s"},
                                            {"id": "custom.axisPlacement", "value": "right"}]}])
    d.timeseries("Offer → answer latency", "Offer created → answer claimed.",
                 [(quantile(0.5, "switchboard_offer_answer_seconds"), "p50"),
                  (quantile(0.99, "switchboard_offer_answer_seconds"), "p99")], "s", w=12)
    d.timeseries("Readiness per pod", "1 when the pod's /readyz reports ready, 0 otherwise.",
                 [(f"max by (pod) ({sel('switchboard_ready')})", "{{pod}}")], "short", w=6)
    d.stat("Processes by role", "Running processes by role and version.",
           [(f"count by (role, version) ({sel('switchboard_build_info')})", "{{role}} {{version}}")],
           "short", w=6, h=8)

    d.row("Edges")
    d.timeseries("Connections open by pod", "WebSocket connections open now, per edge.",
                 [(f"sum by (pod) ({sel('switchboard_connections_open')})", "{{pod}}")], "short")
    d.timeseries("Connections closed by reason", "Connections ended per second, by why.",
                 [(sum_rate("switchboard_connections_closed_total", "reason"), "{{reason}}")], "reqps")
    d.timeseries("Room replicas serving", "Room replicas each edge has attached and healthy.",
                 [(f"min by (pod) ({sel('switchboard_room_replicas_serving')})", "{{pod}}")], "short")
    d.timeseries("Client messages by type", "Client frames received per second, by type.",
                 [(sum_rate("switchboard_client_messages_total", "type"), "{{type}}")], "reqps", w=12)
    d.timeseries("Server messages by type", "Frames sent to clients per second, by type.",
                 [(sum_rate("switchboard_server_messages_total", "type"), "{{type}}")], "reqps", w=12)
    d.timeseries("Relay latency by type", "Edge receives a client's message → the counterpart's edge writes it to its socket.",
                 [(quantile(0.5, "switchboard_relay_latency_seconds", "type"), "p50 {{type}}"),
                  (quantile(0.99, "switchboard_relay_latency_seconds", "type"), "p99 {{type}}")], "s")
    d.timeseries("Session set-up", "WebSocket upgrade → room session open and `welcome` written.",
                 [(quantile(0.5, "switchboard_session_setup_seconds"), "p50"),
                  (quantile(0.99, "switchboard_session_setup_seconds"), "p99")], "s")
    d.timeseries("Slow clients and queue drops", "Clients disconnected because they backed up, and messages dropped on full outbound queues, per second.",
                 [(sum_rate("switchboard_slow_client_disconnects_total"), "slow-client disconnects"),
                  (sum_rate("switchboard_outbound_queue_drops_total"), "outbound queue drops")], "reqps")

    d.row("Room service")
    d.timeseries("gRPC requests at the room (server)", "Room requests handled by the room processes per second, by method and status.",
                 [(sum_rate("switchboard_grpc_requests_total", "method, status", 'side="server"'),
                   "{{method}} {{status}}")], "reqps", w=12)
    d.timeseries("gRPC requests from the edges (client)", "Room requests sent by the edges per second, by method and status.",
                 [(sum_rate("switchboard_grpc_requests_total", "method, status", 'side="client"'),
                   "{{method}} {{status}}")], "reqps", w=12)
    d.timeseries("gRPC p99 duration by method", "99th percentile of room request durations, at the edge (client) and at the room (server).",
                 [(quantile(0.99, "switchboard_grpc_request_duration_seconds", "side, method"),
                   "{{side}} {{method}}")], "s", w=12)
    d.timeseries("Offers created / answered / expired", "Offers created, answered and expired unanswered, per second.",
                 [(sum_rate("switchboard_offers_created_total"), "created"),
                  (sum_rate("switchboard_offers_closed_total", extra='reason="answered"'), "answered"),
                  (sum_rate("switchboard_offers_closed_total", extra='reason="expired"'), "expired")],
                 "reqps", w=12)

    d.row("Redis")
    d.timeseries("Redis command p99 by command", "99th percentile of Redis round trips, by command.",
                 [(quantile(0.99, "switchboard_redis_command_duration_seconds", "command"), "{{command}}")],
                 "s", w=12)
    d.timeseries("Redis errors by command", "Failed or timed-out Redis round trips per second, by command.",
                 [(sum_rate("switchboard_redis_errors_total", "command"), "{{command}}")], "reqps", w=12)
    d.timeseries("Pub/sub messages by direction", "Pub/sub messages published and received per second.",
                 [(sum_rate("switchboard_pubsub_messages_total", "direction"), "{{direction}}")], "reqps")
    d.timeseries("Pub/sub reconnects", "Subscriber connections re-established after a loss, per second.",
                 [(sum_rate("switchboard_pubsub_reconnects_total", "pod"), "{{pod}}")], "reqps")
    d.timeseries("Pub/sub subscriptions", "Redis channels each room process is subscribed to.",
                 [(f"sum by (pod) ({sel('switchboard_pubsub_subscriptions')})", "{{pod}}")], "short")
    return d.panels


def variable_query(name, query):
    return {
        "type": "query", "name": name, "label": name,
        "datasource": DS,
        "query": query, "definition": query,
        "refresh": 2, "sort": 1,
        "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
    }


def dashboard():
    return {
        "uid": "switchboard",
        "title": "Switchboard",
        "description": "Switchboard WebRTC signaling: edges, room service, Redis.",
        "tags": ["switchboard", "webrtc", "signaling"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [],
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Data source",
             "query": "prometheus", "current": {}, "hide": 0, "options": [],
             "refresh": 1, "regex": "", "skipUrlSync": False, "includeAll": False,
             "multi": False},
            variable_query("namespace", "label_values(switchboard_build_info, namespace)"),
            variable_query("pod", 'label_values(switchboard_build_info{namespace=~"$namespace"}, pod)'),
        ]},
        "panels": panels(),
    }


def render():
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--stdout"]:
        sys.stdout.write(text)
    else:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards", "switchboard.json")
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
