//! `loadtest`: simulated Switchboard peers. See `loadtest/README.md` for the
//! scenarios and `loadtest/bench.sh` for the published benchmark.

mod payload;
mod peer;
mod procstat;
mod report;
mod scenario;
mod session;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::procstat::Proc;
use crate::report::Report;
use crate::scenario::Target;

/// The same allocator as the server: the loader shares the machine's cores
/// with it, so what the loader spends is taken from the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulated caller/callee pairs against one or more Switchboard edges.
///
/// Without a scenario flag it runs the closed loop (`--concurrency`,
/// `--duration`). Latencies are HDR histograms; `--pid` names the server
/// processes whose CPU time (and, for `--idle`, memory) is reported.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Args {
    /// Edge WebSocket URL (repeatable); callers and callees alternate edges.
    #[arg(long = "edge", value_name = "URL", required = true)]
    edges: Vec<String>,

    /// Closed loop: sessions in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,

    /// How long to run (each step, for --step-to-slo).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Open loop: sessions started per second, whatever their latency.
    #[arg(long, conflicts_with_all = ["step_to_slo", "idle", "churn"])]
    rate: Option<f64>,

    /// Step-to-SLO: raise the open-loop rate until p99 session time passes --slo-p99.
    #[arg(long, conflicts_with_all = ["idle", "churn"])]
    step_to_slo: bool,

    /// Step-to-SLO: the p99 session time bound.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    slo_p99: Duration,

    /// Step-to-SLO: first rate, and how much each step adds.
    #[arg(long, default_value_t = 500.0)]
    start_rate: f64,
    #[arg(long, default_value_t = 500.0)]
    step_rate: f64,
    #[arg(long, default_value_t = 20)]
    max_steps: usize,

    /// Idle hold: open this many connections and keep them alive.
    #[arg(long, conflicts_with = "churn")]
    idle: Option<usize>,

    /// Idle hold: how long to hold them.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    hold: Duration,

    /// Churn: connections opened and closed per second.
    #[arg(long)]
    churn: Option<f64>,

    /// A server process (pid or /proc/<pid>) whose CPU/RSS to report; repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<String>,

    /// Longest any single wait may take before the session counts as failed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let procs = args
        .pids
        .iter()
        .map(|p| Proc::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    for edge in &args.edges {
        if !edge.starts_with("ws://") && !edge.starts_with("wss://") {
            bail!("--edge {edge}: expected a ws:// or wss:// URL");
        }
    }
    let target = Target::new(args.edges.clone(), args.timeout);
    let cpu_before = procstat::total_cpu(&procs);
    let cpu_used = || (!procs.is_empty()).then(|| procstat::total_cpu(&procs) - cpu_before);

    let report = if let Some(rate) = args.rate {
        let (recorder, took) = scenario::open_loop(&target, rate, args.duration).await;
        Report::new(
            &format!("open loop {rate}/s"),
            &args.edges,
            took.as_secs_f64(),
            &recorder,
            cpu_used(),
        )
    } else if args.step_to_slo {
        let steps = scenario::step_to_slo(
            &target,
            args.start_rate,
            args.step_rate,
            args.duration,
            args.slo_p99,
            args.max_steps,
        )
        .await;
        let mut report = Report::new("step to SLO", &args.edges, 0.0, &Default::default(), None);
        let held = steps
            .iter()
            .filter(|s| s.held)
            .map(|s| s.rate)
            .fold(0.0, f64::max);
        report.extra.insert("last rate held /s".into(), held);
        for step in &steps {
            report
                .extra
                .insert(format!("step {:>6}/s p99 ms", step.rate), step.p99_ms);
        }
        report
    } else if let Some(count) = args.idle {
        let rss_before = procstat::total_rss(&procs);
        let mut rss_after = 0;
        let (recorder, held) = scenario::idle(&target, count, args.hold, || {
            rss_after = procstat::total_rss(&procs)
        })
        .await;
        let mut report = Report::new(
            &format!("idle {count}"),
            &args.edges,
            args.hold.as_secs_f64(),
            &recorder,
            None,
        );
        report.extra.insert("connections held".into(), held as f64);
        if !procs.is_empty() && held > 0 {
            let per = (rss_after.saturating_sub(rss_before)) as f64 / held as f64;
            report.extra.insert("server RSS KiB/conn".into(), per);
        }
        report
    } else if let Some(rate) = args.churn {
        let (recorder, took) = scenario::churn(&target, rate, args.duration).await;
        let mut report = Report::new(
            &format!("churn {rate}/s"),
            &args.edges,
            took.as_secs_f64(),
            &recorder,
            None,
        );
        // Connections, not sessions: no session latencies to report.
        report.session_time = None;
        report.relay_latency = None;
        report.extra.insert(
            "connections/s".into(),
            recorder.ok as f64 / took.as_secs_f64(),
        );
        if let Some(cpu) = cpu_used() {
            report.extra.insert(
                "server CPU s/1000 conns".into(),
                cpu * 1000.0 / recorder.ok.max(1) as f64,
            );
        }
        report
    } else {
        let (recorder, took) =
            scenario::closed_loop(&target, args.concurrency, args.duration).await;
        let name = format!("closed loop C={}", args.concurrency);
        Report::new(
            &name,
            &args.edges,
            took.as_secs_f64(),
            &recorder,
            cpu_used(),
        )
    };

    #[allow(clippy::print_stdout)] // the report is this tool's output
    {
        println!("{}", report.table());
        if !procs.is_empty() {
            let names: Vec<String> = procs.iter().map(Proc::name).collect();
            println!("server processes    {}", names.join(" "));
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.sessions_failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
