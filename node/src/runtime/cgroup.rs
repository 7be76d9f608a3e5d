//! Per-container cgroups for the process runtime: memory and CPU limits, the
//! OOM-kill counter, and a way to kill every process a container left behind.
//!
//! cgroup v2 is used when `/sys/fs/cgroup` is the unified hierarchy with the
//! `memory` controller available; otherwise the v1 `memory` (and `cpu`, if
//! present) hierarchies, when writable. Each runtime instance makes one parent
//! group (named after the runtime, so several agents on one machine do not
//! meet) under the cgroup this process is in, and one leaf per container
//! instance. Without either, limits are not enforced and the runtime says so
//! once in the log.
//!
//! A process joins its leaf before it `exec`s the container's command (the
//! runtime starts it through a tiny `sh` wrapper), so no allocation escapes
//! the limit.

use std::path::{Path, PathBuf};

use super::Limits;

const V2_ROOT: &str = "/sys/fs/cgroup";
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Clone, Debug)]
pub enum Cgroups {
    V2 {
        parent: PathBuf,
    },
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
}

/// One container instance's cgroup.
#[derive(Debug)]
pub struct Leaf {
    version: u8,
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Find a writable hierarchy and create the runtime's parent group named
    /// `name` in it. `None` when cgroups cannot be used here.
    pub fn detect(name: &str) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let root = Path::new(V2_ROOT);
        let v2_controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if v2_controllers.split_whitespace().any(|c| c == "memory") {
            // In v2 a group with controllers enabled may not hold processes, so
            // the parent hangs off the root rather than our own group.
            let parent = root.join(name);
            std::fs::create_dir_all(&parent).ok()?;
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu");
            std::fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu")
                .or_else(|_| std::fs::write(parent.join("cgroup.subtree_control"), "+memory"))
                .ok()?;
            return Some(Self::V2 { parent });
        }
        let own_path = |controller: &str| {
            own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.trim_start_matches('/').to_string())
            })
        };
        let memory = root.join("memory").join(own_path("memory")?).join(name);
        std::fs::create_dir_all(&memory).ok()?;
        if !memory.join("memory.limit_in_bytes").exists() {
            return None;
        }
        let cpu = own_path("cpu").and_then(|own| {
            let dir = root.join("cpu").join(own).join(name);
            std::fs::create_dir_all(&dir).ok()?;
            dir.join("cpu.cfs_quota_us").exists().then_some(dir)
        });
        Some(Self::V1 { memory, cpu })
    }

    /// Create the leaf `name` with `limits` applied.
    pub fn create(&self, name: &str, limits: Limits) -> std::io::Result<Leaf> {
        match self {
            Cgroups::V2 { parent } => {
                let dir = parent.join(name);
                std::fs::create_dir_all(&dir)?;
                if let Some(bytes) = limits.memory_bytes {
                    std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                    // No swap: a container over its limit is OOM-killed, as in
                    // Kubernetes without swap.
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(millis) = limits.cpu_millis {
                    let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
                    let _ = std::fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"));
                }
                Ok(Leaf {
                    version: 2,
                    dirs: vec![dir],
                })
            }
            Cgroups::V1 { memory, cpu } => {
                let mem = memory.join(name);
                std::fs::create_dir_all(&mem)?;
                if let Some(bytes) = limits.memory_bytes {
                    std::fs::write(mem.join("memory.limit_in_bytes"), bytes.to_string())?;
                    let _ = std::fs::write(mem.join("memory.swappiness"), "0");
                }
                let mut dirs = vec![mem];
                if let (Some(cpu), Some(millis)) = (cpu, limits.cpu_millis) {
                    let dir = cpu.join(name);
                    std::fs::create_dir_all(&dir)?;
                    let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
                    std::fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                    dirs.push(dir);
                }
                Ok(Leaf { version: 1, dirs })
            }
        }
    }
}

impl Leaf {
    /// The `cgroup.procs` files a process must write its pid to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many times the kernel's OOM killer fired in this group.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dirs[0].join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Pids still in the group.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dirs[0].join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Remove the group (it must be empty; retried briefly while the kernel
    /// reaps the last processes).
    pub async fn remove(&self) {
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
