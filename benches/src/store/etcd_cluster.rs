//! etcd under test: three `etcd` (3.4, from Debian) processes on loopback with
//! default settings, and a minimal client over our own copy of its v3 API
//! (`proto/etcd.proto`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::etcd_pb::kv_client::KvClient;
use crate::etcd_pb::maintenance_client::MaintenanceClient;
use crate::etcd_pb::watch_client::WatchClient;
use crate::etcd_pb::watch_request::RequestUnion;
use crate::etcd_pb::{
    PutRequest, RangeRequest, StatusRequest, StatusResponse, WatchCreateRequest, WatchRequest,
};
use crate::system::{value, Kv, NameStream, System};

pub const DEFAULT_BINARY: &str = "/usr/bin/etcd";

pub fn check_binary(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "etcd is missing at {}: install etcd 3.4 with `apt-get install -y etcd-server etcd-client` \
             (Debian), or pass --etcd-bin",
            path.display()
        );
    }
    Ok(())
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to etcd at {url}"))
}

/// The smallest key above every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    value: Bytes,
}

impl EtcdClient {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let ch = channel(url).await?;
        Ok(Self {
            kv: KvClient::new(ch.clone()),
            watch: WatchClient::new(ch),
            value: Bytes::from(value()),
        })
    }
}

fn key(space: &str, name: &str) -> Bytes {
    Bytes::from(format!("/{space}/{name}"))
}

impl Kv for EtcdClient {
    async fn put(&self, space: &str, name: &str, _retry: bool) -> anyhow::Result<u64> {
        let req = PutRequest {
            key: key(space, name),
            value: self.value.clone(),
            ..Default::default()
        };
        let reply = self.kv.clone().put(req).await?.into_inner();
        Ok(reply.header.map_or(0, |h| h.revision.max(0) as u64))
    }

    async fn get(&self, space: &str, name: &str) -> anyhow::Result<()> {
        let req = RangeRequest {
            key: key(space, name),
            serializable: false,
            ..Default::default()
        };
        let reply = self.kv.clone().range(req).await?.into_inner();
        if reply.kvs.is_empty() {
            bail!("/{space}/{name} not found");
        }
        Ok(())
    }

    async fn watch(&self, space: &str, after: u64) -> anyhow::Result<NameStream> {
        let prefix = format!("/{space}/");
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: Bytes::from(prefix.clone()),
                range_end: Bytes::from(prefix_end(prefix.as_bytes())),
                // Inclusive.
                start_revision: after as i64 + 1,
                ..Default::default()
            })),
        };
        // Keep the request side open: the watch lives as long as the stream.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let mut responses = self.watch.clone().watch(requests).await?.into_inner();
        let first = responses
            .message()
            .await?
            .ok_or_else(|| anyhow!("the watch stream closed at once"))?;
        if !first.created || first.canceled {
            bail!("etcd did not create the watch: {}", first.cancel_reason);
        }
        let names = move |events: Vec<crate::etcd_pb::Event>| -> Vec<String> {
            events
                .into_iter()
                .filter_map(|e| e.kv)
                .filter_map(|kv| {
                    let k = std::str::from_utf8(&kv.key).ok()?;
                    Some(k.strip_prefix(&prefix)?.to_string())
                })
                .collect()
        };
        let initial = names(first.events.clone());
        let rest = responses.map(move |item| {
            let resp = item?;
            if resp.canceled {
                bail!("etcd cancelled the watch: {}", resp.cancel_reason);
            }
            Ok(names(resp.events))
        });
        Ok(futures::stream::iter([Ok(initial)]).chain(rest).boxed())
    }
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// etcd's member id, learnt from its first status.
    id: u64,
    child: Option<Child>,
}

pub struct EtcdSystem {
    binary: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    // Last: removed after the members have stopped.
    dir: tempfile::TempDir,
}

async fn status(url: &str) -> anyhow::Result<StatusResponse> {
    let mut m = MaintenanceClient::new(channel(url).await?);
    let reply = tokio::time::timeout(Duration::from_secs(2), m.status(StatusRequest {}))
        .await
        .map_err(|_| anyhow!("status of {url} timed out"))??;
    Ok(reply.into_inner())
}

impl EtcdSystem {
    pub async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("balsa-bench-etcd-")
            .tempdir()
            .context("creating a temp dir")?;
        // Hold every listener until all ports are chosen, so they differ.
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("choosing free ports")?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        drop(listeners);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(format!("m{}", i + 1)),
                log: dir.path().join(format!("m{}.log", i + 1)),
                id: 0,
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("balsa-bench-{}", std::process::id());
        let mut sys = Self {
            binary,
            members,
            initial_cluster,
            token,
            dir,
        };
        for i in 0..3 {
            sys.spawn(i)?;
        }
        sys.wait_ready(Duration::from_secs(30)).await?;
        Ok(sys)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &m.client_url,
                "--advertise-client-urls",
                &m.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &m.peer_url,
                "--initial-advertise-peer-urls",
                &m.peer_url,
            ])
            .args([
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", &self.token])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.binary.display(), m.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(child) = &mut m.child {
                if let Some(status) = child.try_wait()? {
                    bail!("etcd {} exited ({status}); see {}", m.name, m.log.display());
                }
            }
        }
        Ok(())
    }

    /// Every member answers, a leader is known, and a write commits.
    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            self.check_alive()?;
            let mut ids = Vec::new();
            let mut leader = 0;
            for m in &self.members {
                match status(&m.client_url).await {
                    Ok(s) => {
                        ids.push(s.header.map_or(0, |h| h.member_id));
                        leader = leader.max(s.leader);
                    }
                    Err(e) => last = format!("{}: {e:#}", m.name),
                }
            }
            if ids.len() == self.members.len() && leader != 0 {
                for (m, id) in self.members.iter_mut().zip(ids) {
                    m.id = id;
                }
                let i = self.leader().await?;
                let client = EtcdClient::connect(&self.members[i].client_url).await?;
                match client.put("bench-ready", "ready", false).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("first write: {e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the etcd cluster was not ready within {within:?}: {last}")
    }
}

impl System for EtcdSystem {
    type Client = EtcdClient;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn members(&self) -> usize {
        self.members.len()
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref()?.id())
            .collect()
    }

    async fn client(&self, i: usize) -> anyhow::Result<EtcdClient> {
        EtcdClient::connect(&self.members[i].client_url).await
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                match status(&m.client_url).await {
                    Ok(s) if s.leader != 0 => {
                        match self.members.iter().position(|x| x.id == s.leader) {
                            Some(i) => return Ok(i),
                            None => {
                                last = format!("{} names an unknown leader {:x}", m.name, s.leader)
                            }
                        }
                    }
                    Ok(_) => last = format!("{} knows no leader", m.name),
                    Err(e) => last = format!("{}: {e:#}", m.name),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no etcd leader within 15s: {last}")
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let mut child = self.members[i]
            .child
            .take()
            .ok_or_else(|| anyhow!("etcd {} is not running", i + 1))?;
        child.kill().await.context("killing an etcd member")
    }

    async fn restart(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        self.spawn(i)?;
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_alive()?;
            let check = async {
                let me = status(&self.members[i].client_url).await?;
                let leader = self
                    .members
                    .iter()
                    .find(|m| m.id == me.leader)
                    .ok_or_else(|| anyhow!("no leader yet"))?;
                let committed = status(&leader.client_url).await?.raft_index;
                anyhow::Ok(me.raft_applied_index >= committed)
            };
            match check.await {
                Ok(true) => return Ok(()),
                Ok(false) => last = "still catching up".into(),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "restarted etcd {} did not catch up within {within:?} ({last}); see {}",
            i + 1,
            self.members[i].log.display()
        )
    }

    async fn shutdown(mut self, keep_data: bool) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill().await;
            }
        }
        crate::system::remove_or_keep(self.dir, keep_data);
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/bench/"), b"/bench0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
