//! The cluster under test: `balsa server` processes started the way `balsa up`
//! starts them, each in its own network namespace when the machine allows it
//! (see [`netns`]) or all on loopback otherwise. The harness keeps every
//! child's handle, so it can SIGKILL, SIGSTOP/SIGCONT and restart any of
//! them, and kills them all when it stops (also on drop).

pub mod disk;
pub mod netns;
pub mod seam;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use balsa::cluster_file::{ClusterFile, MemberEntry};
use balsa_api::grpc::client::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use disk::SmallDisk;
use netns::Net;
use seam::Seam;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub dir: PathBuf,
    pub masters: usize,
    pub binary: PathBuf,
    pub server_args: Vec<String>,
    /// Run each master in its own network namespace.
    pub netns: bool,
    pub run_id: String,
    pub seed: u32,
    /// Put this master's (index) data directory on a tmpfs of this many MB,
    /// for the disk-full fault.
    pub small_disk: Option<(usize, u64)>,
}

pub struct Cluster {
    pub file: ClusterFile,
    opts: ClusterOptions,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    pub net: Option<Net>,
    /// What each master's fault file says (see [`seam`]).
    seams: Vec<Seam>,
    /// Masters that must never be started with `--init` again: they were
    /// wiped and re-added, and `--init` on an empty data directory would
    /// bootstrap a second cluster.
    joined: Vec<bool>,
    /// Given with `--init` to each master's first start only, so that the
    /// initial masters agree on one cluster id and a master wiped and started
    /// again with `--init` does not (see `balsa_raft_store::identity`).
    init_token: String,
    pub disk: Option<(usize, SmallDisk)>,
}

/// The `balsa` binary beside this executable (cargo puts both in one
/// target directory), if it is there.
pub fn default_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    // Test executables live one level deeper, in `deps/`.
    if dir.ends_with("deps") {
        dir = dir.parent()?;
    }
    let candidate = dir.join("balsa");
    candidate.exists().then_some(candidate)
}

/// Builds `balsa` with the `failpoints` feature and copies it to
/// `<target>/chaos-failpoints/balsa`, next to `plain` (a binary in a cargo
/// target directory, `<target>/<profile>/balsa`). It is built in the same
/// target directory as `plain`: only the store, the root package and the
/// binary differ by feature, so this takes about a minute and never rebuilds
/// RocksDB (a separate target directory would rebuild everything); cargo keeps
/// both builds side by side, and the plain build is put back in place after
/// (a fresh build: it only re-links the binary into `<profile>/`).
pub fn build_failpoint_binary(plain: &Path) -> anyhow::Result<PathBuf> {
    let profile_dir = plain
        .parent()
        .context("the balsa binary has no directory")?;
    let target = profile_dir
        .parent()
        .context("the balsa binary is not in a cargo target directory")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace above the chaos crate")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = profile_dir.ends_with("release");
    let build = |features: bool| -> anyhow::Result<()> {
        let mut cmd = std::process::Command::new(&cargo);
        cmd.current_dir(workspace)
            .args(["build", "-p", "balsa", "--target-dir"])
            .arg(target);
        if release {
            cmd.arg("--release");
        }
        if features {
            cmd.args(["--features", "failpoints"]);
        }
        let status = cmd.status().context("running cargo")?;
        if !status.success() {
            bail!(
                "cargo build -p balsa{} failed",
                if features {
                    " --features failpoints"
                } else {
                    ""
                }
            );
        }
        Ok(())
    };
    tracing::info!("building balsa with failpoints (for the storage faults)");
    build(true)?;
    let dir = target.join("chaos-failpoints");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("balsa");
    let tmp = dir.join("balsa.tmp");
    std::fs::copy(profile_dir.join("balsa"), &tmp).context("copying the failpoint build")?;
    std::fs::rename(&tmp, &out)?;
    build(false)?;
    Ok(out)
}

impl Cluster {
    /// Starts the masters and returns once one of them commits a write.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let net = if opts.netns {
            Some(Net::create(&opts.run_id, opts.masters, opts.seed)?)
        } else {
            None
        };
        let mut members = Vec::new();
        let ports = balsa::up::free_ports(3 * opts.masters)?;
        for i in 0..opts.masters {
            let (peer, api, rest) = match &net {
                Some(net) => (
                    format!("{}:7400", net.addr(i)),
                    format!("{}:7500", net.addr(i)),
                    format!("{}:6443", net.addr(i)),
                ),
                None => (
                    format!("127.0.0.1:{}", ports[3 * i]),
                    format!("127.0.0.1:{}", ports[3 * i + 1]),
                    format!("127.0.0.1:{}", ports[3 * i + 2]),
                ),
            };
            let id = i as u64 + 1;
            members.push(MemberEntry {
                id,
                pid: 0,
                peer,
                api,
                rest,
                data_dir: opts.dir.join(format!("master-{id}")),
                log: opts.dir.join(format!("master-{id}.log")),
            });
        }
        let n = members.len();
        let disk = match opts.small_disk {
            Some((i, mb)) if i < n => match SmallDisk::mount(&members[i].data_dir, mb) {
                Ok(d) => Some((i, d)),
                Err(e) => {
                    tracing::warn!(error = %e, "no small disk: disk-full is skipped");
                    None
                }
            },
            _ => None,
        };
        let mut cluster = Cluster {
            file: ClusterFile::new(members),
            opts,
            children: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            net,
            seams: vec![Seam::default(); n],
            joined: vec![false; n],
            init_token: format!("{:032x}", rand::random::<u128>()),
            disk,
        };
        for i in 0..n {
            cluster.write_seam(i)?;
        }
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.file.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.members.is_empty()
    }

    pub fn id(&self, i: usize) -> u64 {
        self.file.members[i].id
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.file.members.iter().position(|m| m.id == id)
    }

    pub fn api(&self, i: usize) -> &str {
        &self.file.members[i].api
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.file.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", net.namespace(i)])
                    .arg(&self.opts.binary);
                c
            }
            None => Command::new(&self.opts.binary),
        };
        cmd.arg("server")
            .args(["--id", &m.id.to_string()])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--peer-listen", &m.peer, "--api-listen", &m.api])
            .args(["--rest-listen", &m.rest])
            .arg("--exit-with-parent")
            .arg("--fault-file")
            .arg(seam::path(&self.opts.dir, m.id));
        if !self.joined[i] {
            cmd.arg("--init");
            for other in &self.file.members {
                cmd.args([
                    "--member",
                    &format!("{}={},{}", other.id, other.peer, other.api),
                ]);
            }
            // pid 0: never started yet.
            if m.pid == 0 {
                cmd.args(["--init-token", &self.init_token]);
            }
        }
        cmd.args(&self.opts.server_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting master {}", m.id))?;
        self.file.members[i].pid = child.id().unwrap_or(0);
        self.children[i] = Some(child);
        self.paused[i] = false;
        self.file.write(&self.opts.dir)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::from("no master answered");
        while tokio::time::Instant::now() < deadline {
            for i in 0..self.len() {
                if let Some(child) = self.children[i].as_mut() {
                    if let Some(status) = child.try_wait()? {
                        bail!(
                            "master {} exited ({status}) while starting; see {}",
                            self.id(i),
                            self.file.members[i].log.display()
                        );
                    }
                }
            }
            match self.leader().await {
                Some(_) => return Ok(()),
                None => last = "no leader yet".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the cluster elected no leader within {within:?}: {last}")
    }

    /// The member id of the leader, as some reachable master reports it.
    pub async fn leader(&self) -> Option<u64> {
        for addr in self.file.api_addrs() {
            let ask = async {
                let c = Client::connect(&addr).await.ok()?;
                c.cluster_status().await.ok()
            };
            if let Ok(Some(status)) = tokio::time::timeout(Duration::from_millis(700), ask).await {
                if status.leader != 0 {
                    return Some(status.leader);
                }
            }
        }
        None
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.paused[i]
    }

    /// SIGKILLs master `i` and reaps it.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[i].take() {
            child.kill().await.context("killing a master")?;
        }
        self.paused[i] = false;
        Ok(())
    }

    /// Starts master `i` again (same id, addresses and data).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.children[i].is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    pub fn pause(&mut self, i: usize, paused: bool) -> anyhow::Result<()> {
        let pid = self.children[i]
            .as_ref()
            .and_then(Child::id)
            .context("the master is not running")?;
        let signal = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(pid as i32), signal)?;
        self.paused[i] = paused;
        Ok(())
    }

    fn write_seam(&self, i: usize) -> anyhow::Result<()> {
        seam::write(&seam::path(&self.opts.dir, self.id(i)), &self.seams[i])
    }

    /// Changes what master `i`'s fault file says.
    pub fn set_seam(&mut self, i: usize, f: impl FnOnce(&mut Seam)) -> anyhow::Result<()> {
        f(&mut self.seams[i]);
        self.write_seam(i)
    }

    /// Cuts every pair (a, b), both ways: by firewall rules between the
    /// masters' namespaces, or on loopback through the transport seam.
    pub fn cut(&mut self, pairs: &[(usize, usize)]) -> anyhow::Result<()> {
        if let Some(net) = self.net.as_mut() {
            return net.cut(pairs);
        }
        for &(a, b) in pairs {
            let (ida, idb) = (self.id(a), self.id(b));
            self.set_seam(a, |s| {
                s.cut.insert(idb);
            })?;
            self.set_seam(b, |s| {
                s.cut.insert(ida);
            })?;
        }
        Ok(())
    }

    /// Drops a share `p` of the traffic between masters.
    pub fn loss(&mut self, p: f64) -> anyhow::Result<()> {
        if let Some(net) = self.net.as_mut() {
            return net.loss(p);
        }
        for i in 0..self.len() {
            self.set_seam(i, |s| s.loss = seam::per_end_loss(p))?;
        }
        Ok(())
    }

    pub fn heal_network(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            self.set_seam(i, Seam::heal_network)?;
        }
        match self.net.as_mut() {
            Some(net) => net.heal(),
            None => Ok(()),
        }
    }

    /// If master `i` has exited, reaps it and says how.
    pub fn exited(&mut self, i: usize) -> Option<String> {
        let child = self.children[i].as_mut()?;
        let status = child.try_wait().ok()??;
        self.children[i] = None;
        Some(status.to_string())
    }

    /// Starts master `i` on an empty data directory, not as part of any
    /// cluster: it waits to be added (see `nemesis`'s member replacement).
    pub fn start_empty(&mut self, i: usize) -> anyhow::Result<()> {
        // First of all: whatever happens below, this master must never be
        // started with `--init` again. On an emptied data directory that
        // bootstraps a second cluster with the same members, which takes
        // over any other empty member (a 10-minute run saw exactly that when
        // the wipe failed half-way on the tmpfs mount point).
        self.joined[i] = true;
        let dir = self.file.members[i].data_dir.clone();
        // Empty the directory rather than remove it: it may be a mount point.
        if dir.exists() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("wiping {}", dir.display()))?
            {
                let path = entry?.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.with_context(|| format!("wiping {}", path.display()))?;
            }
        }
        self.spawn(i)
    }

    /// Undoes every fault: resumes paused masters, clears injected storage
    /// faults and frees a filled disk, restarts dead masters, heals the
    /// network.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if self.paused[i] {
                self.pause(i, false)?;
            }
        }
        for i in 0..self.len() {
            self.set_seam(i, |s| *s = Seam::default())?;
        }
        if let Some((_, disk)) = &self.disk {
            disk.free()?;
        }
        for i in 0..self.len() {
            if self.children[i].is_none() {
                self.spawn(i)?;
            }
        }
        self.heal_network()
    }

    /// Masters that died on their own (not by the nemesis).
    pub fn crashed(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for i in 0..self.len() {
            if let Some(child) = self.children[i].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((self.file.members[i].id, status.to_string()));
                    self.children[i] = None;
                }
            }
        }
        out
    }

    /// Stops every master (SIGCONT, SIGTERM, then SIGKILL after `grace`) and
    /// removes the network.
    pub async fn stop(&mut self, grace: Duration) {
        for i in 0..self.len() {
            if self.paused[i] {
                let _ = self.pause(i, false);
            }
            if let Some(pid) = self.children[i].as_ref().and_then(Child::id) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for slot in &mut self.children {
            if let Some(mut child) = slot.take() {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
        if let Some(net) = self.net.as_mut() {
            net.teardown();
        }
        if let Some((_, disk)) = self.disk.as_mut() {
            disk.unmount();
        }
    }
}
