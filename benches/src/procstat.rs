//! A process's memory and CPU time, from Linux's /proc (cheap enough to read
//! around every job).

use serde::Serialize;

/// /proc reports CPU times in USER_HZ ticks, 100 a second on every Linux
/// architecture we run on.
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcStat {
    pub pid: u32,
    pub rss_mib: f64,
    /// The peak resident set size ("high water mark").
    pub peak_rss_mib: f64,
    /// User plus system CPU time since the process started.
    pub cpu_s: f64,
}

fn kib_field(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()
}

/// utime + stime, in seconds, from the text of /proc/<pid>/stat. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from
/// its closing parenthesis.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

impl ProcStat {
    /// `None` when the process is gone or /proc is not Linux's.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            pid,
            rss_mib: kib_field(&status, "VmRSS:")? / 1024.0,
            peak_rss_mib: kib_field(&status, "VmHWM:")? / 1024.0,
            cpu_s: cpu_seconds(&stat)?,
        })
    }
}

/// The CPU seconds all of `pids` have used so far (missing processes count 0).
pub fn total_cpu_s(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| ProcStat::read(p))
        .map(|s| s.cpu_s)
        .sum()
}

/// CPU seconds the whole machine has spent busy (not idle or waiting on IO)
/// since boot, from the first line of /proc/stat.
pub fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_seconds(stat.lines().next()?)
}

fn busy_seconds(cpu_line: &str) -> Option<f64> {
    let f: Vec<f64> = cpu_line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    // (guests are already counted in user and nice).
    let busy = f.get(..8)?.iter().sum::<f64>() - f[3] - f[4];
    Some(busy / TICKS_PER_S)
}

/// The 1, 5 and 15 minute load averages as /proc/loadavg gives them ("?"
/// where it cannot be read): printed beside figures from a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (balsa (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        let status = "Name:\tbalsa\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(102400.0));
        assert_eq!(kib_field(status, "VmHWM:"), Some(204800.0));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let line = "cpu  100 10 50 1000 40 5 5 0 0 0";
        assert_eq!(busy_seconds(line), Some(1.7));
        assert!(machine_busy_s().is_some());
    }

    #[test]
    fn reads_this_process() {
        let me = ProcStat::read(std::process::id()).expect("/proc/self");
        assert!(me.rss_mib > 0.0 && me.peak_rss_mib >= me.rss_mib);
    }
}
