//! Observability against real parts: a distributed cluster (real processes,
//! a private `redis-server`) carries a call, then
//!
//! * every metric the Grafana dashboard or the alert rules query is in the
//!   processes' `/metrics`, which `promtool check metrics` accepts and which
//!   never names a room, peer or offer;
//! * a real Prometheus scraping an edge and a room process every second
//!   answers each dashboard query with data;
//! * the admin port's `/livez` and `/readyz` (and `switchboard_ready`) follow
//!   the room's Redis going away and coming back.

mod harness;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use harness::cluster::{EDGE_A, EDGE_B, REDIS, ROOM_1, ROOM_2, Side};
use harness::process::{self, wait_until};
use harness::raw::http_get;
use harness::{Cluster, full_call, room};
use switchboard_proto::{ClientMessage, ErrorCode, OfferId, PeerId, RoomId};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/dashboards/switchboard.json"
);
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/prometheus/alerts.yaml"
);

/// The ids a call used, none of which may appear in a metric.
struct Call {
    room: RoomId,
    offer_id: OfferId,
    peers: [PeerId; 2],
}

/// One complete call from edge A to edge B (the callee arrives late), plus a
/// refused request.
async fn make_call(cluster: &Cluster) -> Call {
    let room = room(&format!("obs-{:08x}", rand::random::<u32>()));
    let mut caller = cluster.client(Side::A).await;
    let mut callee = cluster.client(Side::B).await;
    let offer_id = full_call(&mut caller, &mut callee, &room).await;
    callee
        .expect_error(
            ClientMessage::Hangup {
                offer_id: OfferId::random(),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
    let peers = [caller.peer_id, callee.peer_id];
    caller.disconnect().await;
    callee.disconnect().await;
    Call {
        room,
        offer_id,
        peers,
    }
}

/// Every `switchboard_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every query of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.to_owned());
            }
        }
    }
    assert!(queries.len() > 10, "the dashboard has its queries");
    queries
}

/// The names of the metrics a process exposes (histograms by their series).
fn exposed(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    body
}

/// `promtool check metrics` on an exposition.
fn promtool_check(exposition: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool is not installed (scripts/test.sh installs the Debian prometheus package)",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_dashboard_and_alert_metric_is_exposed_after_a_call() {
    let mut cluster = Cluster::distributed().await;
    let call = make_call(&cluster).await;
    let mut all = BTreeSet::new();
    let mut expositions = HashMap::new();
    for (which, name) in [
        (EDGE_A, "edge a"),
        (EDGE_B, "edge b"),
        (ROOM_1, "room 1"),
        (ROOM_2, "room 2"),
    ] {
        let admin = cluster.process(which).admin_addr().await;
        let exposition = scrape(admin).await;
        promtool_check(&exposition, name);
        for id in [call.room.to_string(), call.offer_id.to_string()]
            .into_iter()
            .chain(call.peers.iter().map(ToString::to_string))
        {
            assert!(!exposition.contains(&id), "{name} exposes the id {id}");
        }
        all.extend(exposed(&exposition));
        expositions.insert(which, exposition);
    }
    // The call was counted where it happened.
    let edge_a = &expositions[&EDGE_A];
    assert!(
        edge_a.contains("switchboard_client_messages_total{type=\"offer\"} 1"),
        "{edge_a}"
    );
    assert!(edge_a.contains("switchboard_relay_latency_seconds_bucket{type=\"answer\""));
    let room_1 = &expositions[&ROOM_1];
    assert!(
        room_1.contains("switchboard_offers_created_total 1"),
        "{room_1}"
    );
    let room_2 = &expositions[&ROOM_2];
    assert!(
        room_2.contains("switchboard_offer_answer_seconds_count 1"),
        "{room_2}"
    );

    let alerts = std::fs::read_to_string(ALERTS).expect("alerts");
    let wanted: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names(q))
        .chain(metric_names(&alerts))
        .collect();
    let missing: Vec<&String> = wanted.difference(&all).collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");
    cluster.stop().await;
}

/// A dashboard query as the test's Prometheus can run it.
fn concrete(query: &str) -> String {
    query
        .replace("$__rate_interval", "15s")
        .replace("${namespace}", ".*")
        .replace("${pod}", ".*")
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns how many series it answered with.
async fn query(prometheus: SocketAddr, promql: &str) -> usize {
    let path = format!("/api/v1/query?query={}", url_encode(promql));
    let (status, body) = http_get(prometheus, &path).await;
    assert_eq!(status, 200, "{promql}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
    assert_eq!(answer["status"], "success", "{promql}: {body}");
    answer["data"]["result"].as_array().map_or(0, Vec::len)
}

fn scrape_config(targets: &[(SocketAddr, &str)]) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchboard\n    static_configs:\n",
    );
    for (addr, pod) in targets {
        config.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{namespace: switchboard-test, pod: {pod}}}\n"
        ));
    }
    config
}

#[tokio::test]
async fn prometheus_answers_every_dashboard_query() {
    let mut cluster = Cluster::distributed().await;
    // Both edges and both rooms: the call crosses them (caller on edge A and
    // room 1, callee on edge B and room 2).
    let mut targets = Vec::new();
    for (which, pod) in [
        (EDGE_A, "edge-a"),
        (EDGE_B, "edge-b"),
        (ROOM_1, "room-1"),
        (ROOM_2, "room-2"),
    ] {
        targets.push((cluster.process(which).admin_addr().await, pod));
    }
    let dir = process::log_dir("prometheus");
    let config = scrape_config(&targets);
    let prometheus = process::prometheus(&dir, &config).await;
    make_call(&cluster).await;
    for promql in dashboard_queries().iter().map(|q| concrete(q)) {
        let addr = prometheus.addr;
        wait_until(&format!("data for `{promql}`"), || {
            let promql = promql.clone();
            async move { query(addr, &promql).await > 0 }
        })
        .await;
    }
    // Both targets were scraped with the labels the dashboard filters on.
    let up = "up{job=\"switchboard\", namespace=\"switchboard-test\"} == 1";
    assert_eq!(query(prometheus.addr, up).await, targets.len());
    drop(prometheus);
    cluster.stop().await;
}

#[tokio::test]
async fn admin_readiness_follows_the_rooms_redis() {
    let mut cluster = Cluster::distributed().await;
    let room = cluster.process(ROOM_1).admin_addr().await;
    let edge = cluster.process(EDGE_A).admin_addr().await;
    for admin in [room, edge] {
        assert_eq!(http_get(admin, "/livez").await.0, 200);
        let admin_ready = move || async move { http_get(admin, "/readyz").await.0 == 200 };
        wait_until("admin /readyz to say ready", admin_ready).await;
    }
    assert!(
        scrape(room)
            .await
            .lines()
            .any(|l| l == "switchboard_ready 1")
    );

    cluster.process(REDIS).kill().await;
    let not_ready = || async move {
        let (status, body) = http_get(room, "/readyz").await;
        status == 503 && body.contains("not ready")
    };
    wait_until("the room to report not ready without Redis", not_ready).await;
    assert!(
        scrape(room)
            .await
            .lines()
            .any(|l| l == "switchboard_ready 0")
    );
    assert_eq!(http_get(room, "/livez").await.0, 200, "alive all along");

    cluster.process(REDIS).restart().await;
    let ready = || async move { http_get(room, "/readyz").await.0 == 200 };
    wait_until("the room to be ready again with Redis back", ready).await;
    cluster.stop().await;
}

#[tokio::test]
async fn json_logs_inside_a_request_carry_its_trace_id() {
    let dir = process::log_dir("trace-logs");
    // Tracing on, towards a collector that is not there: export fails
    // quietly, the service is unaffected, and logs still name the trace.
    let collector = format!("http://127.0.0.1:{}", process::free_port());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("RUST_LOG", "info,switchboard_edge=debug"),
    ];
    let args = ["--ice-server".to_owned(), "none".to_owned()];
    let server = process::switchboard_env(&dir, "standalone", "standalone", &args, &env).await;
    let mut client = harness::Client::connect(&format!("ws://{}/ws", server.addr)).await;
    // Refused requests are logged (at debug) inside their request span.
    client
        .expect_error(
            ClientMessage::Hangup {
                offer_id: OfferId::random(),
            },
            ErrorCode::OfferNotFound,
        )
        .await;
    let mut line = None;
    wait_until("the refused request's log line", || {
        line = std::fs::read_to_string(&server.log).ok().and_then(|log| {
            log.lines()
                .find(|l| l.contains("request refused"))
                .map(str::to_owned)
        });
        let found = line.is_some();
        async move { found }
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line.expect("found")).expect("JSON line");
    let trace_id = line["span"]["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "trace_id in {line}"
    );
    assert_eq!(line["span"]["type"], "hangup");
    assert_eq!(line["span"]["peer_id"], client.peer_id.to_string());
}
