//! Real processes for cross-node tests: `redis-server` and the `switchboard`
//! binary in its `room` and `edge` roles, each on a loopback port it picked
//! itself, logging to a file under the test's own directory. Dropping a
//! [`Process`] kills it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::DEADLINE;

/// A directory for one test's logs, kept after the run for post-mortems.
pub fn log_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-tests/{name}-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// A child process that is killed when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
    program: PathBuf,
}

impl Process {
    /// The process's resident memory in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Kills the process at once (SIGKILL) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("exits within the deadline")
            .expect("wait")
    }

    /// Starts the same command again (same port when it had a fixed one).
    pub async fn restart(&mut self) {
        self.kill().await;
        let again = spawn(&self.program, &self.args, &self.log, self.addr).await;
        *self = again;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn spawn(program: &Path, args: &[String], log: &Path, addr: SocketAddr) -> Process {
    spawn_env(program, args, log, addr, &[]).await
}

async fn spawn_env(
    program: &Path,
    args: &[String],
    log: &Path,
    addr: SocketAddr,
    env: &[(&str, &str)],
) -> Process {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Process {
        child,
        addr,
        log: log.to_owned(),
        args: args.to_vec(),
        program: program.to_owned(),
    }
}

/// A free loopback port (bound and released; fine for a server started at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until `check` succeeds, or panics at the deadline with `what`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether a Redis at `addr` answers PING.
pub async fn redis_answers(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    if tcp.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"+PONG\r\n"
}

/// A private `redis-server` on a free loopback port, persisting nothing.
pub async fn redis(dir: &Path) -> Process {
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let process = spawn(
        Path::new("redis-server"),
        &args,
        &dir.join("redis.log"),
        addr,
    )
    .await;
    wait_until("redis to answer", || redis_answers(addr)).await;
    process
}

/// A real Prometheus (the Debian `prometheus` package) with `config`, on a
/// free loopback port, keeping its data under `dir`; returns once it is ready.
pub async fn prometheus(dir: &Path, config: &str) -> Process {
    let port = free_port();
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).expect("prometheus config");
    let args: Vec<String> = vec![
        format!("--config.file={}", config_file.display()),
        format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".into(),
    ];
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let program = Path::new("prometheus");
    assert!(
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok(),
        "prometheus is not installed (scripts/test.sh installs the Debian package)"
    );
    let process = spawn(program, &args, &dir.join("prometheus.log"), addr).await;
    wait_until("prometheus to be ready", || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
            && super::raw::http_get(addr, "/-/ready").await.0 == 200
    })
    .await;
    process
}

/// `switchboard ROLE ARGS…` listening on `127.0.0.1:0`; returns once it
/// listens, with the address it reported in its (JSON) log.
pub async fn switchboard(dir: &Path, name: &str, role: &str, args: &[String]) -> Process {
    switchboard_env(dir, name, role, args, &[]).await
}

/// [`switchboard`] with extra environment variables.
pub async fn switchboard_env(
    dir: &Path,
    name: &str,
    role: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Process {
    let mut full = vec![
        role.to_owned(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--log-format".into(),
        "json".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
    ];
    full.extend_from_slice(args);
    let program = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
    let log = dir.join(format!("{name}.log"));
    let unknown: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut process = spawn_env(&program, &full, &log, unknown, env).await;
    let mut addr = None;
    wait_until(&format!("{name} to report its address"), || {
        addr = listen_addr(&log);
        let found = addr.is_some();
        async move { found }
    })
    .await;
    process.addr = addr.expect("address found");
    // A restart must come back on the same port.
    let port = full
        .iter()
        .position(|a| a == "127.0.0.1:0")
        .expect("listen arg");
    full[port] = process.addr.to_string();
    process.args = full;
    process
}

/// The address from the first log line that has a `listen` field.
fn listen_addr(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| field_addr(line, "listen"))
}

fn field_addr(line: &str, field: &str) -> Option<SocketAddr> {
    let rest = line.split_once(&format!("\"{field}\":\""))?.1;
    rest.split('"').next()?.parse().ok()
}

impl Process {
    /// The admin port of a `switchboard` process (its latest start), once it
    /// has reported it.
    pub async fn admin_addr(&self) -> SocketAddr {
        let mut addr = None;
        wait_until("the admin port in the log", || {
            addr = std::fs::read_to_string(&self.log)
                .ok()
                .and_then(|text| text.lines().rev().find_map(|l| field_addr(l, "admin")));
            let found = addr.is_some();
            async move { found }
        })
        .await;
        addr.expect("admin address found")
    }
}
