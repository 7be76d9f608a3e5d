//! A private containerd for one test: its own config, root, state, socket,
//! CNI bridge and busybox images, all under a temp dir. Never touches a
//! system containerd. [`Containerd::cleanup`] (also run on drop, so on a
//! failed assertion too) removes every sandbox, container and image through
//! CRI, stops containerd and its shims, deletes the bridge, unmounts what is
//! left and deletes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use balsa_node::CriRuntime;
use balsa_proto::cri;
use balsa_proto::cri::image_service_client::ImageServiceClient;
use balsa_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The images every test has (built from the host's busybox-static).
pub const PAUSE_IMAGE: &str = "localhost/pause:local";
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:local";
/// Where Debian's containernetworking-plugins put the CNI binaries.
const CNI_BIN: &str = "/usr/lib/cni";

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    bridge: String,
    child: Option<Child>,
}

/// `scripts/<name>` of the repository (this file is compiled into tests of
/// the node crate and of the root crate).
fn repo_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("scripts").join(name))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("running {cmd:?}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Containerd {
    /// Start containerd with the pause and busybox images imported and a
    /// CNI bridge network; fails with what is missing (`scripts/setup`
    /// installs it all).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// As [`Containerd::start`]; without `pod_network` containerd has no CNI
    /// config (as a stock install), so its `NetworkReady` is false.
    pub async fn start_with(pod_network: bool) -> anyhow::Result<Self> {
        for bin in ["containerd", "ctr", "runc", "busybox"] {
            anyhow::ensure!(
                which(bin),
                "{bin} is not installed: run scripts/setup (apt-get install containerd runc busybox-static containernetworking-plugins)"
            );
        }
        anyhow::ensure!(
            Path::new(CNI_BIN).join("bridge").exists(),
            "no CNI plugins in {CNI_BIN}: run scripts/setup"
        );
        anyhow::ensure!(nix::unistd::geteuid().is_root(), "containerd needs root");
        // Short: the socket path must fit sun_path, the bridge name IFNAMSIZ.
        let dir = tempfile::Builder::new().prefix("bcri").tempdir_in("/tmp")?;
        let (bridge, subnet) = free_network();
        let d = dir.path();
        let socket = d.join("c.sock");
        let conf_dir = d.join("cni");
        std::fs::create_dir_all(&conf_dir)?;
        if pod_network {
            std::fs::write(
                conf_dir.join("10-balsa.conflist"),
                serde_json::json!({
                    "cniVersion": "0.4.0",
                    "name": "balsa-test",
                    "plugins": [
                        {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                                  "dataDir": d.join("ipam")}},
                        {"type": "loopback"}
                    ]
                })
                .to_string(),
            )?;
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  # Pod network namespaces under our state dir, not /run/netns: unmounted
  # with the rest of our directory even if a sandbox was not removed.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{conf}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            conf = conf_dir.display(),
            runc = d.join("runc").display(),
        );
        std::fs::write(d.join("config.toml"), config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut me = Self {
            dir,
            socket,
            bridge,
            child: Some(child),
        };
        me.wait_ready().await?;
        me.import(PAUSE_IMAGE, &["/bin/sleep", "2147483647"])?;
        me.import(BUSYBOX_IMAGE, &[])?;
        Ok(me)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("containerd exited ({status}): {}", self.log_tail());
                }
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                let rt = CriRuntime::new(&self.socket, self.dir.path(), "127.0.0.1")?;
                if rt.version().await.is_ok() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "containerd did not answer on {}: {}",
                self.socket.display(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn import(&self, name: &str, entrypoint: &[&str]) -> anyhow::Result<()> {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        run(Command::new(repo_script("oci-busybox"))
            .arg(&tar)
            .arg(name)
            .args(entrypoint))?;
        run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar))?;
        std::fs::remove_file(&tar)?;
        Ok(())
    }

    /// A runtime on this containerd, with volumes and logs under `root`.
    pub fn runtime(&self, root: &Path) -> CriRuntime {
        CriRuntime::new(&self.socket, root, "127.0.0.1").expect("cri runtime")
    }

    fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::from_static("http://cri.sock").connect_with_connector_lazy(tower::service_fn(
            move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(&path).await?,
                    ))
                }
            },
        ))
    }

    /// What containerd holds: (sandboxes, containers).
    pub async fn counts(&self) -> anyhow::Result<(usize, usize)> {
        let mut rt = RuntimeServiceClient::new(self.channel());
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items
            .len();
        let containers = rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers
            .len();
        Ok((sandboxes, containers))
    }

    /// Everything through CRI first (sandboxes take their containers'
    /// shims with them), then the daemon, then what is on the host.
    pub async fn cleanup(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(e) = self.remove_everything().await {
            eprintln!("cleaning containerd through CRI: {e:#}");
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        self.host_cleanup();
    }

    async fn remove_everything(&self) -> anyhow::Result<()> {
        let mut rt = RuntimeServiceClient::new(self.channel());
        for s in rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items
        {
            let containers = rt
                .list_containers(cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        pod_sandbox_id: s.id.clone(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner()
                .containers;
            for c in containers {
                let _ = rt
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: 0,
                    })
                    .await;
                gone_ok(
                    rt.remove_container(cri::RemoveContainerRequest { container_id: c.id })
                        .await,
                )?;
            }
            gone_ok(
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await,
            )?;
            gone_ok(
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id,
                })
                .await,
            )?;
        }
        let mut images = ImageServiceClient::new(self.channel());
        for image in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
            images
                .remove_image(cri::RemoveImageRequest {
                    image: Some(cri::ImageSpec {
                        image: image.into(),
                    }),
                })
                .await?;
        }
        Ok(())
    }

    /// Shims still serving our socket (only if CRI cleanup failed), the
    /// bridge, mounts under our directory; then the directory goes with
    /// the TempDir.
    fn host_cleanup(&self) {
        let address = self.socket.display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                let ours = args
                    .first()
                    .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                    && args.contains(&address.as_bytes());
                if ours {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        // containerd 1.6 puts shim sockets under /run/containerd/s whatever
        // its state dir; remove the directories only if nothing else (a
        // system containerd) uses them.
        for d in ["/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // A failed test: clean up on a runtime of our own (the test's may
        // be shutting down).
        let me = std::mem::replace(
            self,
            Self {
                dir: tempfile::Builder::new()
                    .prefix("bcri-drop")
                    .tempdir_in("/tmp")
                    .expect("temp dir"),
                socket: PathBuf::new(),
                bridge: String::new(),
                child: None,
            },
        );
        let _ = std::thread::spawn(move || {
            let mut me = me;
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(me.cleanup());
            }
        })
        .join();
    }
}

/// A bridge name and a /24 no interface on this machine uses yet (tests
/// run in parallel, each with its containerd): tried from a per-process
/// starting point, so two tests rarely even try the same one.
fn free_network() -> (String, String) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let addrs = Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = std::process::id() * 31 + SEQ.fetch_add(1, Ordering::Relaxed) * 7919;
    (0..10_000u32)
        .map(|i| (start + i) % 10_000)
        .map(|n| {
            (
                format!("bcri{n}"),
                format!("10.{}.{}", 200 + n / 250 % 50, n % 250),
            )
        })
        .find(|(bridge, net)| {
            !addrs.contains(&format!(" {net}.")) && !links.contains(&format!(" {bridge}:"))
        })
        .map(|(bridge, net)| (bridge, format!("{net}.0/24")))
        .unwrap_or_else(|| ("bcri0".into(), "10.200.0.0/24".into()))
}

/// A failed test's pod workers may still be removing what we remove.
fn gone_ok<T>(r: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match r {
        Err(s) if s.code() != tonic::Code::NotFound => Err(s),
        _ => Ok(()),
    }
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}
