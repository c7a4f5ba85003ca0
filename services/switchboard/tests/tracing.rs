//! One call is one connected trace across edges, room replicas and Redis
//! pub/sub. The whole distributed topology runs in this process (two room
//! services over a private `redis-server`, two edges, real gRPC and
//! WebSockets) so the SDK's in-memory exporter sees every span.

mod harness;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use harness::process::{self, wait_until};
use harness::{Client, full_call, room};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use switchboard::admin::AdminPort;
use switchboard::distributed::{self, Backend};
use switchboard_edge::EdgeConfig;
use switchboard_room::RoomConfig;
use switchboard_telemetry::metrics::Role;
use switchboard_telemetry::{prometheus, trace};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

async fn admin(role: Role) -> AdminPort {
    AdminPort {
        listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        exporter: prometheus::install(role).expect("recorder"),
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_is_one_connected_trace_across_edges_and_rooms() {
    let exporter = InMemorySpanExporter::default();
    let (layer, tracing) = trace::layer::<Registry, _>("switchboard-test", exporter.clone());
    tracing_subscriber::registry()
        .with(layer.with_filter(trace::span_filter()))
        .init();

    let dir = process::log_dir("tracing");
    let redis = process::redis(&dir).await;
    let shutdown = CancellationToken::new();
    let mut servers = Vec::new();
    let mut room_urls = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        room_urls.push(format!("http://{}", listener.local_addr().expect("addr")));
        let backend = Backend::Redis {
            url: format!("redis://{}/", redis.addr),
            prefix: "trace:".into(),
        };
        servers.push(tokio::spawn(distributed::run_room(
            listener,
            admin(Role::Room).await,
            backend,
            RoomConfig::default(),
            shutdown.clone(),
        )));
    }
    // Edge A reaches only room 1 and edge B only room 2: the call has to
    // cross replicas through Redis pub/sub.
    let mut edges = Vec::new();
    for url in &room_urls {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        edges.push(format!("ws://{addr}/ws"));
        let config = EdgeConfig {
            ice_servers: Vec::new(),
            ..EdgeConfig::default()
        };
        servers.push(tokio::spawn(distributed::run_edge(
            listener,
            admin(Role::Edge).await,
            vec![url.clone()],
            config,
            shutdown.clone(),
        )));
        let ready = move || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && harness::raw::http_get(addr, "/readyz").await.0 == 200
        };
        wait_until("edge readiness", ready).await;
    }

    // A call in which the callee arrives after the offer was made.
    let mut caller = Client::connect(&edges[0]).await;
    let mut callee = Client::connect(&edges[1]).await;
    let offer_id = full_call(&mut caller, &mut callee, &room("traced")).await;

    // The last span of the call ends right after its frame is written.
    let offer = offer_id.to_string();
    let mut spans = Vec::new();
    wait_until("the hangup's delivery span", || {
        tracing.flush();
        spans = exporter.get_finished_spans().expect("spans");
        let done = spans.iter().any(|s| {
            s.name == "ws.deliver"
                && attr(s, "type").as_deref() == Some("hangup")
                && attr(s, "offer_id").as_deref() == Some(offer.as_str())
        });
        async move { done }
    })
    .await;

    let about_offer: Vec<&SpanData> = spans
        .iter()
        .filter(|s| attr(s, "offer_id").as_deref() == Some(offer.as_str()))
        .collect();
    let call_trace: TraceId = about_offer
        .iter()
        .find(|s| s.name == "ws.request" && attr(s, "type").as_deref() == Some("answer"))
        .expect("the callee's answer request span")
        .span_context
        .trace_id();
    for span in &about_offer {
        assert_eq!(
            span.span_context.trace_id(),
            call_trace,
            "{} ({:?}) is part of the call's trace",
            span.name,
            attr(span, "type")
        );
    }

    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == call_trace)
        .collect();
    let ids: HashSet<SpanId> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
    let roots: Vec<&&SpanData> = in_trace
        .iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID)
        .collect();
    assert_eq!(roots.len(), 1, "one root");
    assert_eq!(roots[0].name, "ws.request");
    assert_eq!(attr(roots[0], "type").as_deref(), Some("offer"));
    for span in &in_trace {
        assert!(
            span.parent_span_id == SpanId::INVALID || ids.contains(&span.parent_span_id),
            "{} hangs off a span of the trace",
            span.name
        );
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for span in &in_trace {
        *by_name.entry(span.name.as_ref()).or_default() += 1;
    }
    for name in ["ws.request", "room.request", "bus.receive", "ws.deliver"] {
        assert!(by_name.contains_key(name), "no {name} span in {by_name:?}");
    }
    for span in in_trace.iter().filter(|s| s.name == "bus.receive") {
        assert!(
            span.links
                .iter()
                .any(|l| ids.contains(&l.span_context.span_id())),
            "a pub/sub receive links to its publisher"
        );
    }
    assert!(
        in_trace.iter().any(|s| attr(s, "peer_id").is_some()),
        "spans carry peer ids"
    );

    // Never an SDP or a candidate in a span.
    for span in &spans {
        for kv in &span.attributes {
            let value = kv.value.as_str();
            assert!(
                !value.contains("x-padding") && !value.contains("typ host"),
                "{} carries {}={value}",
                span.name,
                kv.key
            );
        }
    }

    caller.disconnect().await;
    callee.disconnect().await;
    shutdown.cancel();
    for server in servers {
        let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "servers stop cleanly");
    }
    drop(redis);
}
