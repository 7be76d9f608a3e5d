//! The Kubernetes API against stock clients: a real three-master cluster (as
//! `balsa up` starts it) driven by `/usr/bin/kubectl`.

mod kube_rs;
mod kubectl;
mod logs;
mod python;
mod sets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use balsa::up::{self, Cluster, UpOptions};

pub struct Kube {
    pub cluster: Option<Cluster>,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Kube {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = UpOptions {
            dir: dir.path().to_path_buf(),
            masters: 3,
            binary: env!("CARGO_BIN_EXE_balsa").into(),
            server_args: Vec::new(),
            node_args: Vec::new(),
        };
        let cluster = up::start(&opts).await.expect("cluster up");
        let kubeconfig = dir.path().join(up::KUBECONFIG);
        let kube = Kube {
            cluster: Some(cluster),
            kubeconfig,
            dir,
        };
        kube.wait_for_namespaces().await;
        kube
    }

    /// The system namespaces are created just after the first leader appears.
    async fn wait_for_namespaces(&self) {
        for _ in 0..200 {
            let out = self.kubectl_raw(&["get", "namespace", "default", "-o", "name"], None);
            if out.status.success() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("namespace default never appeared");
    }

    pub fn kubectl_raw(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        kubectl_in(&self.kubeconfig, self.dir.path(), args, stdin, &[])
    }

    pub async fn stop(mut self) {
        if let Some(c) = self.cluster.take() {
            c.stop(Duration::from_secs(5)).await;
        }
    }
}

pub fn kubectl_in(
    kubeconfig: &Path,
    cwd: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", cwd)
        .current_dir(cwd)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("kubectl runs (installed at /usr/bin/kubectl)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("kubectl finishes")
}
