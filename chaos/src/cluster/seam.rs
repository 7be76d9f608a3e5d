//! Faults injected from inside each master, through its `--fault-file` (see
//! `balsa::fault_file`): partitions and loss on the store's peer-transport
//! seam (how the harness partitions masters that share loopback, where there
//! are no network namespaces) and, in a `failpoints` build, a slow or failing
//! log sync. The harness keeps what each master should have in force and
//! rewrites that master's file whole (write then rename, so a master never
//! reads half a file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, Clone, Default)]
pub struct Seam {
    /// Member ids this master neither reaches nor hears.
    pub cut: BTreeSet<u64>,
    /// Share of Raft messages dropped, each way.
    pub loss: f64,
    pub log_sync_delay: Option<Duration>,
    pub log_sync_error: bool,
}

impl Seam {
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.cut.is_empty() {
            let ids: Vec<String> = self.cut.iter().map(u64::to_string).collect();
            s += &format!("cut {}\n", ids.join(" "));
        }
        if self.loss > 0.0 {
            s += &format!("loss {}\n", self.loss);
        }
        if let Some(d) = self.log_sync_delay {
            s += &format!("log-sync-delay {}ms\n", d.as_millis());
        }
        if self.log_sync_error {
            s += "log-sync-error\n";
        }
        s
    }

    /// Network faults off, storage faults kept.
    pub fn heal_network(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
    }
}

/// The fault file of the master with this id in the run directory.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("master-{id}.faults"))
}

pub fn write(file: &Path, seam: &Seam) -> anyhow::Result<()> {
    let tmp = file.with_extension("faults.tmp");
    std::fs::write(&tmp, seam.render()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))
}

/// The per-message loss that, applied once when a master sends and again
/// when its peer receives (the seam checks both ends), drops `p` overall.
pub fn per_end_loss(p: f64) -> f64 {
    1.0 - (1.0 - p.clamp(0.0, 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_balsa_server_parses() {
        let mut s = Seam::default();
        assert_eq!(s.render(), "");
        s.cut.extend([3, 2]);
        s.loss = 0.5;
        s.log_sync_delay = Some(Duration::from_millis(250));
        s.log_sync_error = true;
        assert_eq!(
            s.render(),
            "cut 2 3\nloss 0.5\nlog-sync-delay 250ms\nlog-sync-error\n"
        );
        let parsed = balsa::fault_file::FaultSpec::parse(&s.render()).expect("parses");
        assert_eq!(parsed.cut, vec![2, 3]);
        s.heal_network();
        assert_eq!(s.render(), "log-sync-delay 250ms\nlog-sync-error\n");
        let p = per_end_loss(0.25);
        assert!((1.0 - (1.0 - p) * (1.0 - p) - 0.25).abs() < 1e-9);
    }
}
