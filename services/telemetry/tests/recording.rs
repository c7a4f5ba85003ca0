//! What the recording functions record reaches the installed recorder, through
//! the per-thread handles, on every thread, and what was recorded before the
//! recorder existed does not leave a dead handle behind.

use std::time::Duration;

use switchboard_telemetry::metrics::{self, Role};
use switchboard_telemetry::prometheus;

/// The value of the exposition line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn recorded_values_reach_the_exposition() {
    // Before any recorder: goes nowhere, and must not be cached as a no-op.
    metrics::client_message("join");

    let exporter = prometheus::install(Role::Standalone).expect("install the recorder");
    let joins = r#"switchboard_client_messages_total{type="join"}"#;
    assert_eq!(value(&exporter.render(), joins), 0.0);

    metrics::client_message("join");
    metrics::client_message("join");
    let open = metrics::connection_opened();
    metrics::relay_latency("answer", Duration::from_millis(1));
    std::thread::spawn(|| metrics::client_message("join"))
        .join()
        .expect("the recording thread panicked");

    let text = exporter.render();
    assert_eq!(value(&text, joins), 3.0);
    assert_eq!(value(&text, "switchboard_connections_open"), 1.0);
    assert_eq!(value(&text, "switchboard_connections_opened_total"), 1.0);
    assert_eq!(
        value(
            &text,
            r#"switchboard_relay_latency_seconds_count{type="answer"}"#
        ),
        1.0
    );

    drop(open);
    assert_eq!(
        value(&exporter.render(), "switchboard_connections_open"),
        0.0
    );
}
