//! The official Python client (`pip install kubernetes`), in a virtualenv the
//! test creates under the build cache the first time.

use std::path::PathBuf;
use std::process::Command;

use crate::Kube;

fn python() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/balsa/pyenv");
    let py = venv.join("bin/python");
    let has_client = py.exists()
        && Command::new(&py)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_client {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "kubernetes"])
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install kubernetes");
    }
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client() {
    let py = python();
    let k = Kube::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kube/python_client.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&k.kubeconfig)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "python client scenario failed:\n{stdout}\n{stderr}"
    );
    k.stop().await;
}
