#!/usr/bin/env python3
"""Assertions on the output of `helm template` for the switchboard chart.

    check_rendered.py RENDERED.yaml --chart DIR [--values FILE ...]
        --release NAME --namespace NS [--expect-all-features] [--core-out FILE]

The expectations are derived from the chart's values.yaml merged with the given
values files (as helm merges them), so every scenario is checked against what
it asked for. --core-out writes the rendered objects of built-in kinds (not the
Prometheus operator's CRDs) for kubernetes-validate. Prints one line per failed
check and exits 1 if any failed. Called by deploy/helm/test.sh.
"""

import argparse
import copy
import json
import re
import sys

import yaml

HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}
CRD_GROUPS = ("monitoring.coreos.com/",)


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failures.append(what)
        return cond


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_args_list(args):
    """--flag=value / --flag value -> {flag: [values]}."""
    flags = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v = a[2:], args[i + 1]
                i += 1
            else:
                k, v = a[2:], None
            flags.setdefault(k, []).append(v)
        i += 1
    return flags


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration or "")
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_map(container):
    return {e["name"]: e for e in container.get("env") or []}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--chart", required=True)
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--release", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--expect-all-features", action="store_true",
                    help="fail unless ingress+tls, HPA with the connections metric, "
                    "ServiceMonitor, PrometheusRule, dashboards and tracing are rendered")
    ap.add_argument("--core-out")
    opts = ap.parse_args()

    with open(f"{opts.chart}/values.yaml") as f:
        values = yaml.safe_load(f)
    for path in opts.values:
        with open(path) as f:
            values = deep_merge(values, yaml.safe_load(f) or {})

    with open(opts.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    c = Checker()
    run_checks(c, docs, values, opts)

    if opts.core_out:
        core = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]
        with open(opts.core_out, "w") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)

    for failure in c.failures:
        print(f"  FAIL {failure}")
    print(f"  {c.passed} checks passed, {len(c.failures)} failed ({len(docs)} objects)")
    return 1 if c.failures else 0


def run_checks(c, docs, values, opts):
    ns = opts.namespace
    full = (
        opts.release
        if "switchboard" in opts.release
        else f"{opts.release}-switchboard"
    )
    if values.get("fullnameOverride"):
        full = values["fullnameOverride"]
    mode = values["mode"]

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    kinds = lambda k: by_kind.get(k, [])  # noqa: E731
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    c.check(len(named) == len(docs), "object names are unique per kind")
    for d in docs:
        labels = d["metadata"].get("labels") or {}
        c.check(labels.get("app.kubernetes.io/instance") == opts.release,
                f"{d['kind']}/{d['metadata']['name']} has the instance label")

    deployments = kinds("Deployment")
    pods = kinds("Pod")
    images = set()

    # --- every pod: hardened security context, no API token ------------------
    pod_specs = [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in deployments]
    pod_specs += [(f"Pod/{p['metadata']['name']}", p["spec"]) for p in pods]
    for where, spec in pod_specs:
        psc = spec.get("securityContext") or {}
        c.check(psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot")
        c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                f"{where}: pod seccompProfile RuntimeDefault")
        c.check(spec.get("automountServiceAccountToken") is False, f"{where}: no service account token")
        for ctr in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            w = f"{where}/{ctr['name']}"
            sc = ctr.get("securityContext") or {}
            for k, v in HARDENED.items():
                c.check(sc.get(k) == v, f"{w}: securityContext.{k} == {v!r} (got {sc.get(k)!r})")
            c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                    f"{w}: capabilities drop ALL")
            c.check((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                    f"{w}: seccompProfile RuntimeDefault")
            images.add(ctr["image"])
            names = [e["name"] for e in ctr.get("env") or []]
            c.check(len(names) == len(set(names)), f"{w}: no duplicate env names {names}")
    c.check(len(images) == 1, f"one image everywhere (got {sorted(images)})")

    # --- Deployments: probes, ports, preStop, grace ---------------------------
    roles = {}
    for d in deployments:
        name = d["metadata"]["name"]
        spec = d["spec"]
        tpl = spec["template"]
        pod_labels = tpl["metadata"]["labels"]
        c.check(labels_match(spec["selector"]["matchLabels"], pod_labels),
                f"Deployment/{name}: selector matches its pod labels")
        ctrs = tpl["spec"]["containers"]
        c.check(len(ctrs) == 1, f"Deployment/{name}: one container")
        ctr = ctrs[0]
        args = ctr.get("args") or []
        role = args[0] if args else None
        roles.setdefault(role, []).append(d)
        flags = parse_args_list(args[1:])
        w = f"Deployment/{name} ({role})"
        c.check(role in ("standalone", "edge", "room"), f"{w}: args start with a role (got {args[:1]})")
        c.check(pod_labels.get("app.kubernetes.io/component") == role, f"{w}: component label is the role")
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports") or []}
        c.check(ports.get("admin") == 9090, f"{w}: container port admin = 9090")
        c.check((flags.get("admin-listen") or [""])[-1].endswith(":9090"), f"{w}: --admin-listen on 9090")
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            hg = (ctr.get(probe) or {}).get("httpGet") or {}
            c.check(hg.get("path") == path and hg.get("port") == "admin",
                    f"{w}: {probe} GET {path} on port admin (got {hg})")
        if values["probes"]["startup"]["enabled"]:
            hg = (ctr.get("startupProbe") or {}).get("httpGet") or {}
            c.check(hg.get("path") == "/livez" and hg.get("port") == "admin",
                    f"{w}: startupProbe GET /livez on port admin (got {hg})")
        else:
            c.check("startupProbe" not in ctr, f"{w}: no startupProbe unless enabled")
        pre_stop = ((ctr.get("lifecycle") or {}).get("preStop") or {})
        c.check(set(pre_stop) <= {"sleep"}, f"{w}: preStop uses only the sleep action (no shell in the image)")
        sleep = int((pre_stop.get("sleep") or {}).get("seconds", 0))
        cfg = values[role] if role in values else {}
        c.check(sleep == cfg.get("preStopSleepSeconds"), f"{w}: preStop sleep = preStopSleepSeconds ({sleep})")
        grace = 0
        if role in ("standalone", "edge"):
            g = flags.get("shutdown-grace")
            c.check(g is not None and seconds(g[-1]) is not None, f"{w}: --shutdown-grace given")
            grace = seconds(g[-1]) if g else 0
            c.check(grace == values["client"]["shutdownGraceSeconds"],
                    f"{w}: --shutdown-grace = client.shutdownGraceSeconds")
            c.check(ports.get("http") == 8080, f"{w}: container port http = 8080")
        tgps = tpl["spec"].get("terminationGracePeriodSeconds")
        c.check(isinstance(tgps, int) and tgps > sleep + grace,
                f"{w}: terminationGracePeriodSeconds ({tgps}) > preStop sleep ({sleep}) + shutdown grace ({grace})")
        if role == "room":
            c.check(ports.get("grpc") == 50051, f"{w}: container port grpc = 50051")
            c.check((flags.get("listen") or [""])[-1].endswith(":50051"), f"{w}: --listen on 50051")
        if values["topologySpread"]["enabled"] and not cfg.get("topologySpreadConstraints"):
            tsc = tpl["spec"].get("topologySpreadConstraints") or []
            keys = [t["topologyKey"] for t in tsc]
            c.check(keys == values["topologySpread"]["topologyKeys"], f"{w}: spread over {keys}")
            for t in tsc:
                c.check(t["whenUnsatisfiable"] == values["topologySpread"]["whenUnsatisfiable"]
                        and labels_match(t["labelSelector"]["matchLabels"], pod_labels)
                        and t["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") == role,
                        f"{w}: spread constraint {t['topologyKey']} selects this component only")
        if values["tracing"]["otlpEndpoint"]:
            env = env_map(ctr)
            c.check((env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or {}).get("value") == values["tracing"]["otlpEndpoint"],
                    f"{w}: OTEL_EXPORTER_OTLP_ENDPOINT set")
            want = values["tracing"]["serviceName"] + ("" if role == "standalone" else f"-{role}")
            c.check((env.get("OTEL_SERVICE_NAME") or {}).get("value") == want, f"{w}: OTEL_SERVICE_NAME = {want}")
        else:
            c.check(not any(n.startswith("OTEL_") for n in env_map(ctr)), f"{w}: no OTEL_* env without tracing")

    # --- Services, Ingress, HPA, PDB refer to what exists ---------------------
    def deployment_for(selector):
        return [d for d in deployments if labels_match(selector, d["spec"]["template"]["metadata"]["labels"])]

    services = {s["metadata"]["name"]: s for s in kinds("Service")}
    for name, svc in services.items():
        targets = deployment_for(svc["spec"].get("selector") or {})
        c.check(len(targets) == 1, f"Service/{name} selects exactly one Deployment's pods")
        if targets:
            ctr_ports = {p["name"] for p in targets[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
            for p in svc["spec"]["ports"]:
                c.check(p.get("targetPort") in ctr_ports, f"Service/{name}: targetPort {p.get('targetPort')} is a container port")

    public = services.get(full)
    c.check(public is not None, f"public Service {full} exists")
    if public:
        pports = {p["name"]: p["port"] for p in public["spec"]["ports"]}
        c.check(pports.get("http") == values["service"]["port"] and pports.get("admin") == 9090,
                f"public Service ports http={values['service']['port']}, admin=9090 (got {pports})")
        want_role = "edge" if mode == "distributed" else "standalone"
        tgt = deployment_for(public["spec"]["selector"])
        c.check(len(tgt) == 1 and tgt[0]["spec"]["template"]["spec"]["containers"][0]["args"][0] == want_role,
                f"public Service selects the {want_role} pods")
        c.check(public["spec"].get("sessionAffinity") in (None, "None"), "public Service has no session affinity")

    for ing in kinds("Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                c.check(b["name"] == full and b["port"].get("name") == "http",
                        f"Ingress/{ing['metadata']['name']}: backend is {full}:http (got {b})")
    c.check(bool(kinds("Ingress")) == bool(values["ingress"]["enabled"]), "Ingress rendered iff ingress.enabled")

    for hpa in kinds("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = named.get(("Deployment", ref["name"]))
        c.check(target is not None and ref["kind"] == "Deployment", f"HPA/{hpa['metadata']['name']} targets an existing Deployment")
        if target:
            c.check(target["spec"]["template"]["spec"]["containers"][0]["args"][0] == "edge", "the HPA scales the edges")
            c.check("replicas" not in target["spec"], "the autoscaled Deployment leaves replicas to the HPA")
        metrics = hpa["spec"]["metrics"]
        c.check(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics), "HPA scales on CPU")
        conns = values["edge"]["autoscaling"]["connectionsPerPod"]
        pm = [m for m in metrics if m["type"] == "Pods"]
        if conns:
            c.check(len(pm) == 1 and pm[0]["pods"]["metric"]["name"] == "switchboard_connections_open"
                    and pm[0]["pods"]["target"]["type"] == "AverageValue"
                    and str(pm[0]["pods"]["target"]["averageValue"]) == str(conns),
                    f"HPA Pods metric switchboard_connections_open averageValue {conns} (got {pm})")
        else:
            c.check(not pm, "no Pods metric without edge.autoscaling.connectionsPerPod")
    c.check(bool(kinds("HorizontalPodAutoscaler")) == (mode == "distributed" and values["edge"]["autoscaling"]["enabled"]),
            "HPA rendered iff distributed and edge.autoscaling.enabled")

    for pdb in kinds("PodDisruptionBudget"):
        tgt = deployment_for(pdb["spec"]["selector"]["matchLabels"])
        c.check(len(tgt) == 1, f"PDB/{pdb['metadata']['name']} selects one Deployment's pods")

    # --- Secrets referenced exist (or are the external ones asked for) ---------
    secrets = {s["metadata"]["name"]: s for s in kinds("Secret")}
    external = {values["redis"]["existingSecret"], values["client"]["iceCredentials"]["existingSecret"]} - {""}
    for where, spec in pod_specs:
        for ctr in spec["containers"]:
            for e in ctr.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] in external:
                    c.check(ref["name"] not in secrets, f"{where}: external Secret {ref['name']} is not rendered")
                    continue
                s = secrets.get(ref["name"])
                keys = set((s or {}).get("stringData") or {}) | set((s or {}).get("data") or {})
                c.check(ref["key"] in keys, f"{where}: env {e['name']} refers to a rendered Secret {ref['name']} with key {ref['key']}")

    # --- the helm test hook ---------------------------------------------------
    tests = [p for p in pods if (p["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    c.check(len(tests) == 1, "one helm test hook Pod")
    for p in tests:
        ctr = p["spec"]["containers"][0]
        args = ctr.get("args") or []
        flags = parse_args_list(args[1:])
        c.check(args[:1] == ["probe"], f"test Pod runs `probe` (got {args})")
        url = (flags.get("url") or [""])[-1]
        c.check(url == f"ws://{full}.{ns}.svc:{values['service']['port']}/ws", f"test Pod probes the public Service (got {url})")
        c.check(seconds((flags.get("timeout") or [""])[-1]) is not None, "test Pod passes --timeout")
        c.check(p["spec"].get("restartPolicy") == "Never", "test Pod does not restart")

    # --- per mode ---------------------------------------------------------------
    all_args = [a for d in deployments for a in d["spec"]["template"]["spec"]["containers"][0].get("args") or []]
    all_env = [e["name"] for d in deployments for e in d["spec"]["template"]["spec"]["containers"][0].get("env") or []]
    components = {(d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") for d in docs}
    if mode == "standalone":
        c.check(len(deployments) == 1, f"standalone renders exactly one Deployment (got {len(deployments)})")
        c.check(set(roles) == {"standalone"}, f"standalone Deployment runs `switchboard standalone` (got {sorted(map(str, roles))})")
        if deployments:
            c.check(deployments[0]["spec"].get("replicas") == 1, "standalone replicas == 1")
        c.check(not any(re.match(r"--(redis|room)", a) for a in all_args), "standalone: no --redis/--room args")
        c.check(not any(n.startswith(("SWITCHBOARD_REDIS", "SWITCHBOARD_ROOM")) for n in all_env), "standalone: no Redis/room env")
        c.check("room" not in components and "edge" not in components, "standalone: no room or edge objects")
        c.check(not kinds("HorizontalPodAutoscaler") and not kinds("PodDisruptionBudget"), "standalone: no HPA, no PDB")
        c.check(not any(s["spec"].get("clusterIP") == "None" for s in services.values()), "standalone: no headless Service")
        c.check(f"{full}-redis" not in secrets, "standalone: no Redis Secret")
    else:
        c.check(set(roles) == {"edge", "room"} and len(deployments) == 2, f"distributed: an edge and a room Deployment (got {sorted(map(str, roles))})")
        headless_name = f"{full}-room-headless"
        headless = services.get(headless_name)
        c.check(headless is not None, f"distributed: headless Service {headless_name}")
        if headless:
            hs = headless["spec"]
            c.check(hs.get("clusterIP") == "None", "headless Service has clusterIP None")
            c.check(hs.get("publishNotReadyAddresses") is False, "headless Service publishes ready addresses only")
            c.check([(p["name"], p["port"]) for p in hs["ports"]] == [("grpc", 50051)], "headless Service port grpc 50051")
            tgt = deployment_for(hs["selector"])
            c.check(len(tgt) == 1 and tgt[0]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "room",
                    "headless Service selects the room pods")
        for edge in roles.get("edge", []):
            ctr = edge["spec"]["template"]["spec"]["containers"][0]
            flags = parse_args_list(ctr["args"][1:])
            want = f"http://{headless_name}.{ns}.svc:50051"
            c.check(flags.get("room") == [want], f"edge --room is the headless Service {want} (got {flags.get('room')})")
            c.check(not any(n.startswith("SWITCHBOARD_REDIS") for n in env_map(ctr)), "edge has no Redis env")
            if not values["edge"]["autoscaling"]["enabled"]:
                c.check(edge["spec"].get("replicas") == values["edge"]["replicas"], "edge replicas from values")
        for room in roles.get("room", []):
            ctr = room["spec"]["template"]["spec"]["containers"][0]
            flags = parse_args_list(ctr["args"][1:])
            c.check(flags.get("redis-prefix") == [values["redis"]["prefix"]], "room --redis-prefix from values")
            c.check("redis" not in flags, "the Redis URL is not on the command line (it may hold a password)")
            ref = ((env_map(ctr).get("SWITCHBOARD_REDIS") or {}).get("valueFrom") or {}).get("secretKeyRef")
            c.check(ref is not None, "room gets SWITCHBOARD_REDIS from a Secret")
            if ref and values["redis"]["existingSecret"]:
                c.check(ref == {"name": values["redis"]["existingSecret"], "key": values["redis"]["existingSecretKey"]},
                        f"room SWITCHBOARD_REDIS from the existing Secret (got {ref})")
            elif ref:
                s = secrets.get(ref["name"]) or {}
                c.check((s.get("stringData") or {}).get(ref["key"]) == values["redis"]["url"],
                        "room SWITCHBOARD_REDIS from the chart's Secret holding redis.url")
            c.check(room["spec"].get("replicas") == values["room"]["replicas"], "room replicas from values")
        pdbs = {p["metadata"]["name"] for p in kinds("PodDisruptionBudget")}
        c.check((f"{full}-edge" in pdbs) == values["edge"]["pdb"]["enabled"], "edge PDB iff edge.pdb.enabled")
        c.check((f"{full}-room" in pdbs) == values["room"]["pdb"]["enabled"], "room PDB iff room.pdb.enabled")

    # --- observability objects ---------------------------------------------------
    sms = kinds("ServiceMonitor")
    c.check(len(sms) == int(bool(values["metrics"]["serviceMonitor"]["enabled"])), "ServiceMonitor iff enabled")
    for sm in sms:
        eps = sm["spec"]["endpoints"]
        c.check([(e["port"], e.get("path")) for e in eps] == [("admin", "/metrics")], "ServiceMonitor scrapes admin:/metrics")
        sel = sm["spec"]["selector"]["matchLabels"]
        scraped = [s for s in services.values() if labels_match(sel, s["metadata"]["labels"])]
        c.check(all(any(p["name"] == "admin" for p in s["spec"]["ports"]) for s in scraped),
                "ServiceMonitor selects only Services with an admin port")
        scraped_roles = sorted(
            d["spec"]["template"]["spec"]["containers"][0]["args"][0]
            for s in scraped for d in deployment_for(s["spec"]["selector"]))
        want = ["standalone"] if mode == "standalone" else ["edge", "room"]
        c.check(scraped_roles == want, f"ServiceMonitor scrapes each of {want} once (got {scraped_roles})")
        c.check(sm["spec"].get("namespaceSelector", {}).get("matchNames") == [ns], "ServiceMonitor in the release namespace")

    rules = kinds("PrometheusRule")
    c.check(len(rules) == int(bool(values["metrics"]["prometheusRule"]["enabled"])), "PrometheusRule iff enabled")
    if rules:
        with open(f"{opts.chart}/files/alerts.yaml") as f:
            source = yaml.safe_load(f)
        want = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
        got = [r.get("alert") for g in rules[0]["spec"]["groups"] for r in g["rules"] if "alert" in r]
        c.check(bool(want), "alerts.yaml has alerts")
        missing = sorted(set(want) - set(got))
        c.check(not missing, f"PrometheusRule contains every alert of alerts.yaml (missing {missing})")
        c.check(rules[0]["spec"]["groups"] == source["groups"], "PrometheusRule groups are alerts.yaml's, unchanged")

    cms = [m for m in kinds("ConfigMap") if (m["metadata"].get("labels") or {}).get("grafana_dashboard") is not None]
    c.check(len(cms) == int(bool(values["dashboards"]["enabled"])), "dashboards ConfigMap iff enabled")
    for cm in cms:
        c.check(cm["metadata"]["labels"]["grafana_dashboard"] == "1", 'dashboards ConfigMap labelled grafana_dashboard: "1"')
        with open(f"{opts.chart}/files/switchboard.json") as f:
            source = json.load(f)
        for key, text in cm["data"].items():
            try:
                parsed = json.loads(text)
                c.check(key.endswith(".json"), f"dashboard key {key} ends in .json")
                c.check(parsed == source, f"dashboard {key} is the JSON of files/switchboard.json")
            except ValueError as e:
                c.check(False, f"dashboard {key} is valid JSON ({e})")

    if opts.expect_all_features:
        ing = kinds("Ingress")
        c.check(bool(ing) and bool(ing[0]["spec"].get("tls")) and bool(ing[0]["spec"].get("ingressClassName")),
                "all features: Ingress with TLS and a class")
        if ing:
            ann = ing[0]["metadata"].get("annotations") or {}
            c.check(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout") == "3600"
                    and ann.get("nginx.ingress.kubernetes.io/proxy-send-timeout") == "3600",
                    "all features: Ingress has the WebSocket timeouts")
        hpas = kinds("HorizontalPodAutoscaler")
        c.check(bool(hpas) and any(m["type"] == "Pods" for m in hpas[0]["spec"]["metrics"]),
                "all features: HPA with the connections metric")
        for k in ("ServiceMonitor", "PrometheusRule"):
            c.check(bool(kinds(k)), f"all features: {k}")
        c.check(bool(cms), "all features: dashboards ConfigMap")
        c.check(any(n == "OTEL_EXPORTER_OTLP_ENDPOINT" for n in all_env), "all features: tracing env")


if __name__ == "__main__":
    sys.exit(main())
