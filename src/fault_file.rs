//! `balsa server --fault-file PATH`: faults switched on and off at run time by
//! whoever started the master (the chaos harness), by rewriting one small
//! file. The master re-reads it every [`POLL`] and puts exactly what it says
//! in force; an empty or missing file means no faults. One fault a line:
//!
//! ```text
//! cut 2 3               # drop all Raft traffic to and from members 2 and 3
//! loss 0.25             # drop this share of Raft messages to and from every peer
//! log-sync-delay 300ms  # sleep before each log fsync (a slow disk)
//! log-sync-error        # fail each log fsync (the master then exits)
//! ```
//!
//! `cut` and `loss` use the store's peer-transport seam (`Faults`), present in
//! every build: they are how the harness partitions masters that share one
//! loopback network. The `log-sync-*` lines need a build with the
//! `failpoints` feature; a plain build logs an error and ignores them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use balsa_raft_store::failpoints::{self, Failpoints};
use balsa_raft_store::{Faults, NodeId};

/// How often the file is re-read.
pub const POLL: Duration = Duration::from_millis(50);

/// Everything one version of the file asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub cut: Vec<NodeId>,
    pub loss: f64,
    pub storage: Failpoints,
}

impl FaultSpec {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut spec = FaultSpec::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let Some(verb) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            let at = || format!("line {}: {line:?}", n + 1);
            match (verb, args.as_slice()) {
                ("cut", ids) => {
                    for id in ids {
                        spec.cut.push(id.parse().with_context(at)?);
                    }
                }
                ("loss", [p]) => {
                    let p: f64 = p.parse().with_context(at)?;
                    if !(0.0..=1.0).contains(&p) {
                        bail!("{}: loss must be between 0 and 1", at());
                    }
                    spec.loss = p;
                }
                ("log-sync-delay", [d]) => {
                    spec.storage.log_sync_delay =
                        Some(humantime::parse_duration(d).with_context(at)?);
                }
                ("log-sync-error", []) => spec.storage.log_sync_error = true,
                _ => bail!("{}: unknown fault", at()),
            }
        }
        Ok(spec)
    }

    /// Puts this spec in force (replacing the previous one).
    fn apply(&self, faults: &Faults) -> anyhow::Result<()> {
        faults.heal();
        faults.partition(self.cut.iter().copied());
        faults.set_loss(self.loss);
        failpoints::set(self.storage.clone()).map_err(anyhow::Error::msg)
    }
}

/// Re-reads `path` every [`POLL`] and applies it whenever it changes, until
/// the task is aborted.
pub async fn follow(path: PathBuf, faults: Faults) {
    let mut current = FaultSpec::default();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        // Missing means no faults: the harness may remove the file to heal.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let spec = match FaultSpec::parse(&text) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "fault file not understood; keeping the faults in force");
                continue;
            }
        };
        if spec == current {
            continue;
        }
        match spec.apply(&faults) {
            Ok(()) => tracing::warn!(?spec, "injected faults changed"),
            Err(e) => tracing::error!(error = %e, "could not inject every fault"),
        }
        current = spec;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_refuses_nonsense() {
        let spec = FaultSpec::parse(
            "cut 2 3\nloss 0.25 # a comment\n\nlog-sync-delay 300ms\nlog-sync-error\n",
        )
        .expect("parses");
        assert_eq!(spec.cut, vec![2, 3]);
        assert_eq!(spec.loss, 0.25);
        assert_eq!(
            spec.storage.log_sync_delay,
            Some(Duration::from_millis(300))
        );
        assert!(spec.storage.log_sync_error);
        assert_eq!(FaultSpec::parse("").expect("empty"), FaultSpec::default());
        assert!(FaultSpec::parse("loss 2").is_err());
        assert!(FaultSpec::parse("cut two").is_err());
        assert!(FaultSpec::parse("fsync please").is_err());
    }
}
