//! Balsa under test: three `balsa server` processes started exactly as the
//! cluster tests and `balsa up` start them, and the typed gRPC client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use balsa::up::{self, Cluster, UpOptions};
use balsa_api::grpc::client::Client;
use balsa_api::resource::ResourceType;
use balsa_api::StoreError;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::Deserialize;

use crate::system::{value, Kv, NameStream, System};

/// The `balsa` binary next to this one (both are built into the same profile
/// directory), unless given.
pub fn find_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating the benches binary")?
            .parent()
            .context("the benches binary has no parent directory")?
            .join("balsa"),
    };
    if !path.is_file() {
        bail!(
            "the balsa binary is missing at {}: build it first with \
             `cargo build --release --bin balsa -p balsa` (same profile as the benches), or pass --balsa-bin",
            path.display()
        );
    }
    Ok(path)
}

#[derive(Clone)]
pub struct BalsaClient {
    client: Client,
    configmaps: Arc<ResourceType>,
    value: Arc<str>,
}

impl BalsaClient {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let client = Client::connect(addr)
            .await
            .with_context(|| format!("connecting to Balsa at {addr}"))?;
        Ok(Self {
            client,
            configmaps: Arc::new(ResourceType::of("v1", "ConfigMap")),
            value: value().into(),
        })
    }

    /// A linearizable list of the ConfigMaps of `space`, one page; returns
    /// how many it held.
    pub async fn list_count(&self, space: &str) -> anyhow::Result<usize> {
        let page = self
            .client
            .list("", &self.configmaps.plural, Some(space), 0, None)
            .await?;
        Ok(page.items.len())
    }

    fn object(&self, space: &str, name: &str) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"{space}"}},"data":{{"v":"{}"}}}}"#,
            self.value
        )
    }
}

#[derive(Deserialize)]
struct NameOnly {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

impl Kv for BalsaClient {
    async fn put(&self, space: &str, name: &str, retry: bool) -> anyhow::Result<u64> {
        match self.client.create(self.object(space, name).into()).await {
            Ok((_, rev)) => Ok(rev.0),
            Err(StoreError::AlreadyExists { .. }) if retry => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, space: &str, name: &str) -> anyhow::Result<()> {
        let key = self.configmaps.key(Some(space), name);
        self.client.get(&key, false).await?;
        Ok(())
    }

    async fn watch(&self, space: &str, after: u64) -> anyhow::Result<NameStream> {
        let req = WatchRequest {
            group: String::new(),
            resource: self.configmaps.plural.clone(),
            namespace: space.into(),
            name: String::new(),
            after: Some(after),
            bookmark_interval_ms: 0,
        };
        let stream = self.client.watch(req).await?;
        Ok(stream
            .map(|item| {
                let reply = item?;
                if reply.r#type == EventType::Bookmark as i32 {
                    return Ok(Vec::new());
                }
                let obj: NameOnly =
                    serde_json::from_slice(&reply.object).context("decoding a watch event")?;
                Ok(vec![obj.metadata.name])
            })
            .boxed())
    }
}

pub struct BalsaSystem {
    cluster: Option<Cluster>,
    opts: UpOptions,
    // Last: removed after the masters have stopped.
    dir: tempfile::TempDir,
}

/// Creates each namespace through the gRPC API (objects need an existing one),
/// retrying on every member until the cluster takes writes.
async fn create_namespaces(addrs: &[String], namespaces: &[&str]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for ns in namespaces {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
        let mut attempt = 0;
        loop {
            let client = Client::connect(&addrs[attempt % addrs.len()]).await;
            match client {
                Ok(c) => match c.create(body.clone().into()).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => break,
                    Err(e) if std::time::Instant::now() > deadline => {
                        return Err(anyhow!("creating namespace {ns}: {e}"))
                    }
                    Err(_) => {}
                },
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(anyhow!("creating namespace {ns}: {e}"))
                }
                Err(_) => {}
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

impl BalsaSystem {
    /// Starts three masters (each with `server_args` added to its command
    /// line) and creates `namespaces` (through gRPC).
    pub async fn start(
        binary: PathBuf,
        namespaces: &[&str],
        server_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("balsa-bench-balsa-")
            .tempdir()
            .context("creating a temp dir")?;
        let opts = UpOptions {
            dir: dir.path().to_path_buf(),
            masters: 3,
            binary,
            server_args,
            node_args: Vec::new(),
        };
        let cluster = up::start(&opts)
            .await
            .context("starting the Balsa cluster")?;
        create_namespaces(&cluster.file.api_addrs(), namespaces).await?;
        Ok(Self {
            cluster: Some(cluster),
            opts,
            dir,
        })
    }

    fn cluster(&mut self) -> anyhow::Result<&mut Cluster> {
        self.cluster
            .as_mut()
            .ok_or_else(|| anyhow!("the cluster was stopped"))
    }

    /// What `balsa up` wrote: each master's addresses, pid, data dir and log.
    pub fn file(&self) -> anyhow::Result<&balsa::cluster_file::ClusterFile> {
        Ok(&self
            .cluster
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster was stopped"))?
            .file)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The highest Raft term any member reports (each election raises it).
    pub async fn term(&self) -> anyhow::Result<u64> {
        let mut last = anyhow!("no member answered");
        for m in &self.file()?.members {
            let status = match Client::connect(&m.api).await {
                Ok(c) => c.cluster_status().await,
                Err(e) => Err(e),
            };
            match status {
                Ok(s) => return Ok(s.members.iter().map(|m| m.term).max().unwrap_or(0)),
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    /// Member `i` is serving, and has applied what the leader has committed.
    async fn caught_up(&self, i: usize) -> anyhow::Result<bool> {
        let m = &self.file()?.members[i];
        let client = Client::connect(&m.api).await?;
        let status = client.cluster_status().await?;
        let find = |id| status.members.iter().find(|s| s.id == id);
        let (Some(me), Some(leader)) = (find(m.id), find(status.leader)) else {
            return Ok(false);
        };
        Ok(me.error.is_empty()
            && leader.error.is_empty()
            && me.applied_index >= leader.commit_index)
    }
}

impl System for BalsaSystem {
    type Client = BalsaClient;

    fn name(&self) -> &'static str {
        "Balsa"
    }

    fn members(&self) -> usize {
        self.opts.masters
    }

    fn pids(&self) -> Vec<u32> {
        self.file()
            .map(|f| f.members.iter().map(|m| m.pid).collect())
            .unwrap_or_default()
    }

    async fn client(&self, i: usize) -> anyhow::Result<BalsaClient> {
        BalsaClient::connect(&self.file()?.members[i].api).await
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            for m in &self.file()?.members {
                let status = match Client::connect(&m.api).await {
                    Ok(c) => c.cluster_status().await,
                    Err(e) => Err(e),
                };
                match status {
                    Ok(s) => match self.file()?.members.iter().position(|x| x.id == s.leader) {
                        Some(i) => return Ok(i),
                        None => last = format!("master {} knows no leader", m.id),
                    },
                    Err(e) => last = format!("master {}: {e}", m.id),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no Balsa leader within 15s: {last}")
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster()?.kill(i).await
    }

    async fn restart(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let opts = self.opts.clone();
        self.cluster()?.respawn(i, &opts)?;
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.caught_up(i).await {
                Ok(true) => return Ok(()),
                Ok(false) => last = "still catching up".into(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = &self.file()?.members[i].log;
        bail!(
            "restarted master {} did not catch up within {within:?} ({last}); see {}",
            i + 1,
            log.display()
        )
    }

    async fn shutdown(mut self, keep_data: bool) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop(Duration::from_secs(10)).await;
        }
        crate::system::remove_or_keep(self.dir, keep_data);
    }
}
