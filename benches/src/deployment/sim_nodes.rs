//! The hollow nodes: one `balsa node --runtime sim --count N` process (the
//! same agent code as a real node, with containers that "start" at once),
//! attached to the masters through their `cluster.json`, and the wait until
//! the API shows every one of its Nodes Ready.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use balsa_api::grpc::client::Client;
use serde::Deserialize;
use tokio::process::{Child, Command};

/// How long N agents get to register their Nodes and report them Ready.
const REGISTER_WITHIN: Duration = Duration::from_secs(300);
/// Nodes are named `<PREFIX>-<i>`, 1-based (`balsa node --count`).
pub const PREFIX: &str = "sim";

/// The running agent process; killed when dropped.
pub struct SimNodes {
    child: Child,
    pub count: usize,
}

#[derive(Deserialize)]
struct NodeView {
    #[serde(default)]
    status: Option<NodeStatusView>,
}

#[derive(Deserialize)]
struct NodeStatusView {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl SimNodes {
    /// Starts `count` sim nodes in one process, logging to `<dir>/sim-nodes.log`.
    pub fn start(binary: &Path, dir: &Path, count: usize) -> anyhow::Result<Self> {
        let log_path = dir.join("sim-nodes.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(binary);
        cmd.args(["node", "--name", PREFIX, "--runtime", "sim"])
            .args(["--count", &count.to_string(), "--sim-delay-ms", "0"])
            .arg("--cluster")
            .arg(balsa::cluster_file::ClusterFile::path(dir))
            .arg("--root")
            .arg(dir.join("sim-nodes"))
            .args(["--shutdown-grace", "0", "--exit-with-parent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the sim node agents")?;
        Ok(Self { child, count })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the API lists `count` Nodes, each Ready; returns how long
    /// that took.
    pub async fn wait_ready(&mut self, client: &Client) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut last_print = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("the sim node agents exited early ({status}); see sim-nodes.log");
            }
            let ready = ready_nodes(client).await.unwrap_or(0);
            if ready >= self.count {
                return Ok(t0.elapsed());
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                println!("  {ready} of {} nodes Ready", self.count);
                last_print = Instant::now();
            }
            if t0.elapsed() > REGISTER_WITHIN {
                bail!(
                    "only {ready} of {} sim nodes Ready within {REGISTER_WITHIN:?}",
                    self.count
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether `conditions` holds `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Nodes the API lists as Ready (every page).
async fn ready_nodes(client: &Client) -> anyhow::Result<usize> {
    let mut ready = 0;
    let mut token = None;
    loop {
        let page = client.list("", "nodes", None, 500, token).await?;
        for item in &page.items {
            let n: NodeView = serde_json::from_slice(item).context("decoding a node")?;
            if n.status.is_some_and(|s| is_true(&s.conditions, "Ready")) {
                ready += 1;
            }
        }
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return Ok(ready),
        }
    }
}
