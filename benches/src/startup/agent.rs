//! The node agents under test: one `balsa node` process (one node on the
//! process runtime, or N hollow nodes on the sim runtime), its log in the
//! bench's directory, stopped with SIGTERM so it stops its pods (their
//! processes are in their own process groups: a SIGKILLed agent would leave
//! them behind).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use balsa_api::grpc::client::Client;
use tokio::process::{Child, Command};

pub struct AgentProcess {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts `balsa node --name NAME` with `args` added, attached to
    /// `masters`, its root under `dir`.
    pub fn spawn(
        binary: &Path,
        dir: &Path,
        name: &str,
        masters: &[String],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .args(["node", "--name", name, "--masters", &masters.join(",")])
            .arg("--root")
            .arg(dir.join(name))
            .args(["--shutdown-grace", "2", "--exit-with-parent"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // The last resort, if the bench itself fails between here and stop().
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node agent {name}"))?;
        let pid = child.id().context("the agent exited at once")?;
        Ok(Self { child, pid, log })
    }

    /// Fails when the agent has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the node agent exited ({status}); see {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until `count` Node objects whose names start with `prefix`
    /// exist (the agent registered them).
    pub async fn registered(
        &mut self,
        client: &Client,
        prefix: &str,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let began = Instant::now();
        loop {
            self.check()?;
            let page = client.list("", "nodes", None, 0, None).await?;
            let seen = page
                .items
                .iter()
                .filter(|raw| {
                    serde_json::from_slice::<serde_json::Value>(raw)
                        .ok()
                        .and_then(|v| {
                            v["metadata"]["name"]
                                .as_str()
                                .map(|n| n.starts_with(prefix))
                        })
                        .unwrap_or(false)
                })
                .count();
            if seen >= count {
                return Ok(began.elapsed());
            }
            if began.elapsed() > within {
                bail!(
                    "{seen} of {count} nodes registered within {within:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGTERM (the agent stops its pods), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        // `kill(1)`: this crate does not link a signal API of its own.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("  the node agent did not stop within {grace:?}; killing it");
            let _ = self.child.kill().await;
        }
    }
}
