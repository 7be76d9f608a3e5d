//! Where the eviction signals come from: a small trait, so the monitor is
//! driven by fake readings in tests and by the machine in the agent.
//!
//! On the machine, `memory.available` is `/proc/meminfo`'s MemAvailable,
//! lowered to what the agent's own memory cgroup (or any ancestor with a
//! limit) has left when that is what bounds it: limit minus working set
//! (usage minus inactive file pages), kubelet's formula. `nodefs.available`
//! is `statvfs` of the node's root directory (blocks available to
//! unprivileged users, as `df` shows).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::machine::MachineError;

/// One reading of every signal, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub memory_available: u64,
    /// What `memory.available` is out of (percentage thresholds).
    pub memory_capacity: u64,
    pub nodefs_available: u64,
    pub nodefs_capacity: u64,
}

/// Something that can read the eviction signals. Reading may block (files,
/// `statvfs`): callers run it off the async threads.
pub trait SignalSource: Send + Sync + 'static {
    fn observe(&self) -> Result<Observation, MachineError>;
}

/// The machine this agent runs on, and the filesystem of `root`.
#[derive(Clone, Debug)]
pub struct MachineSignals {
    root: PathBuf,
    /// Where cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    cgroup_root: PathBuf,
    /// `/proc/self/cgroup`'s text is read from here.
    self_cgroup: PathBuf,
}

impl MachineSignals {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            self_cgroup: PathBuf::from("/proc/self/cgroup"),
        }
    }
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> MachineError + '_ {
    move |source| MachineError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// A `KEY VALUE` line of a cgroup `memory.stat`.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The tightest memory limit on the cgroup at `dir` and its ancestors up to
/// `top`: `(limit, working set)` of the group that has the least left.
/// `v2` picks the file names. `None` when no group has a limit.
fn cgroup_memory(top: &Path, dir: &Path, v2: bool) -> Option<(u64, u64)> {
    let (limit_file, usage_file, inactive_key) = if v2 {
        ("memory.max", "memory.current", "inactive_file")
    } else {
        (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        )
    };
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).ok();
    let mut best: Option<(u64, u64)> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if !d.starts_with(top) {
            break;
        }
        // v1 says "no limit" with a huge number, v2 with `max`.
        let limit = read(d, limit_file)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|l| *l < (1 << 62));
        if let Some(limit) = limit {
            let usage = read(d, usage_file)
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let inactive = read(d, "memory.stat")
                .and_then(|t| stat_field(&t, inactive_key))
                .unwrap_or(0);
            let working_set = usage.saturating_sub(inactive);
            let left = limit.saturating_sub(working_set);
            if best.is_none_or(|(l, w)| left < l.saturating_sub(w)) {
                best = Some((limit, working_set));
            }
        }
        if d == top {
            break;
        }
        at = d.parent();
    }
    best
}

impl MachineSignals {
    /// `(limit, working set)` of the agent's own memory cgroup, if limited.
    fn own_cgroup(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(&self.self_cgroup).ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                let top = self.cgroup_root.clone();
                if top.join("cgroup.controllers").exists() {
                    return cgroup_memory(&top, &top.join(path), true);
                }
            } else if controllers.split(',').any(|c| c == "memory") {
                let top = self.cgroup_root.join("memory");
                return cgroup_memory(&top, &top.join(path), false);
            }
        }
        None
    }
}

impl SignalSource for MachineSignals {
    fn observe(&self) -> Result<Observation, MachineError> {
        let meminfo = Path::new("/proc/meminfo");
        let text = std::fs::read_to_string(meminfo).map_err(io(meminfo))?;
        let field = |name: &'static str| {
            crate::machine::meminfo(&text, name).ok_or(MachineError::Missing("/proc/meminfo", name))
        };
        let mut memory_capacity = field("MemTotal")?;
        let mut memory_available = field("MemAvailable")?;
        if let Some((limit, working_set)) = self.own_cgroup() {
            let left = limit.saturating_sub(working_set);
            if left < memory_available {
                memory_available = left;
                memory_capacity = memory_capacity.min(limit);
            }
        }
        let (nodefs_capacity, nodefs_available) = crate::machine::statvfs(&self.root)?;
        Ok(Observation {
            memory_available,
            memory_capacity,
            nodefs_available,
            nodefs_capacity,
        })
    }
}

/// One reading shared by many nodes on one machine (sim nodes in one
/// process, their roots on one filesystem): a reading younger than
/// `max_age` answers again instead of reading the machine once per node.
pub struct Shared<S> {
    inner: S,
    max_age: Duration,
    last: Mutex<Option<(Instant, Observation)>>,
}

impl<S> Shared<S> {
    pub fn new(inner: S, max_age: Duration) -> Self {
        Self {
            inner,
            max_age,
            last: Mutex::new(None),
        }
    }
}

impl<S: SignalSource> SignalSource for Shared<S> {
    fn observe(&self) -> Result<Observation, MachineError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, o)) = *last {
            if at.elapsed() < self.max_age {
                return Ok(o);
            }
        }
        let o = self.inner.observe()?;
        *last = Some((Instant::now(), o));
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let o = MachineSignals::new(dir.path()).observe().unwrap();
        assert!(o.memory_available > 0 && o.memory_available <= o.memory_capacity);
        assert!(o.nodefs_available <= o.nodefs_capacity && o.nodefs_capacity > 0);
    }

    #[test]
    fn a_limited_cgroup_bounds_memory_available() {
        let fake = tempfile::tempdir().unwrap();
        let top = fake.path().join("cgroup");
        let leaf = top.join("agents.slice").join("agent");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(top.join("cgroup.controllers"), "cpu memory").unwrap();
        // The parent is limited to 1 GiB and has 900 MiB working set; the
        // leaf is unlimited.
        let parent = top.join("agents.slice");
        std::fs::write(parent.join("memory.max"), format!("{}\n", 1u64 << 30)).unwrap();
        std::fs::write(
            parent.join("memory.current"),
            format!("{}\n", 1000u64 << 20),
        )
        .unwrap();
        std::fs::write(
            parent.join("memory.stat"),
            format!("anon 1\ninactive_file {}\nactive_file 5\n", 100u64 << 20),
        )
        .unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(leaf.join("memory.current"), "4096\n").unwrap();
        let self_cgroup = fake.path().join("self");
        std::fs::write(&self_cgroup, "0::/agents.slice/agent\n").unwrap();
        let s = MachineSignals {
            root: fake.path().to_path_buf(),
            cgroup_root: top,
            self_cgroup,
        };
        assert_eq!(s.own_cgroup(), Some((1 << 30, 900 << 20)));
        let o = s.observe().unwrap();
        assert!(o.memory_available <= 124 << 20, "{o:?}");
        assert!(o.memory_capacity <= 1 << 30);
    }

    #[test]
    fn no_limit_means_no_cgroup_bound() {
        let fake = tempfile::tempdir().unwrap();
        let top = fake.path().join("memory");
        std::fs::create_dir_all(top.join("a")).unwrap();
        std::fs::write(top.join("a/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(top.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let self_cgroup = fake.path().join("self");
        std::fs::write(&self_cgroup, "12:cpu,cpuacct:/a\n9:memory:/a\n").unwrap();
        let s = MachineSignals {
            root: fake.path().to_path_buf(),
            cgroup_root: fake.path().to_path_buf(),
            self_cgroup,
        };
        assert_eq!(s.own_cgroup(), None);
    }

    /// Counts its readings; each one reports that count as memory available.
    struct Counting(std::sync::atomic::AtomicU64);

    impl SignalSource for Counting {
        fn observe(&self) -> Result<Observation, MachineError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok(Observation {
                memory_available: n,
                memory_capacity: 100,
                nodefs_available: 1,
                nodefs_capacity: 1,
            })
        }
    }

    #[test]
    fn a_shared_reading_answers_until_it_is_too_old() {
        let shared = Shared::new(Counting(0.into()), Duration::from_millis(50));
        assert_eq!(shared.observe().unwrap().memory_available, 1);
        assert_eq!(shared.observe().unwrap().memory_available, 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(shared.observe().unwrap().memory_available, 2);
        let never = Shared::new(Counting(0.into()), Duration::ZERO);
        never.observe().unwrap();
        assert_eq!(never.observe().unwrap().memory_available, 2);
    }
}
