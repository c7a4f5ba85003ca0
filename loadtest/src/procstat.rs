//! CPU time and resident memory of the server processes under test, read from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux).

use std::path::PathBuf;

/// A process named by pid or by its `/proc/<pid>` path.
#[derive(Debug, Clone)]
pub struct Proc {
    dir: PathBuf,
}

/// Ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Proc {
    /// `1234` or `/proc/1234`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let dir = match s.parse::<u32>() {
            Ok(pid) => PathBuf::from(format!("/proc/{pid}")),
            Err(_) => PathBuf::from(s),
        };
        if !dir.join("stat").exists() {
            return Err(format!(
                "{s}: no such process ({} has no stat)",
                dir.display()
            ));
        }
        Ok(Self { dir })
    }

    pub fn name(&self) -> String {
        std::fs::read_to_string(self.dir.join("comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| self.dir.display().to_string())
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(self.dir.join("stat")) else {
            return 0.0;
        };
        // Fields after the `(comm)` part: state is field 3, utime 14, stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return 0.0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / ticks_per_second()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

/// CPU seconds summed over `procs`.
pub fn total_cpu(procs: &[Proc]) -> f64 {
    procs.iter().map(Proc::cpu_seconds).sum()
}

/// Resident KiB summed over `procs`.
pub fn total_rss(procs: &[Proc]) -> u64 {
    procs.iter().map(Proc::rss_kib).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = Proc::parse(&std::process::id().to_string()).expect("self");
        assert!(me.rss_kib() > 0);
        assert!(me.cpu_seconds() >= 0.0);
        assert!(Proc::parse("/proc/999999999").is_err());
    }
}
