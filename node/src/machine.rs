//! This machine as a Kubernetes node: capacity, allocatable, pressure
//! signals, and the Node object's status and labels built from them.
//!
//! Reading (`MachineInfo::read`, `Signals::read`) is IO; building
//! (`node_status`, `node_labels`) is pure, so the agent loop decides when to
//! read and tests feed made-up numbers. Allocatable is capacity minus the
//! reservations and the hard eviction thresholds, as kubelet computes it;
//! the memory and disk pressure conditions are decided by the eviction
//! monitor (`crate::eviction`) against the same thresholds.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::eviction::threshold::{HardThresholds, Value};

/// Kubelet's default `maxPods`.
pub const MAX_PODS: u32 = 110;

/// What the machine has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    pub hostname: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
    pub os: &'static str,
    pub arch: &'static str,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{0} has no {1} line")]
    Missing(&'static str, &'static str),
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A `/proc/meminfo` field in bytes.
pub(crate) fn meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// `(capacity, available)` bytes of the filesystem holding `dir`.
pub(crate) fn statvfs(dir: &Path) -> Result<(u64, u64), MachineError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|source| MachineError::Statvfs {
        path: dir.display().to_string(),
        source,
    })?;
    let frag = st.fragment_size() as u64;
    Ok((
        st.blocks() as u64 * frag,
        st.blocks_available() as u64 * frag,
    ))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl MachineInfo {
    /// Read the machine; `root_dir` is where the node keeps pods (its
    /// filesystem is the node's ephemeral storage).
    pub fn read(root_dir: &Path) -> Result<Self, MachineError> {
        let mem = std::fs::read_to_string("/proc/meminfo").map_err(|source| MachineError::Io {
            what: "/proc/meminfo".into(),
            source,
        })?;
        let memory_bytes =
            meminfo(&mem, "MemTotal").ok_or(MachineError::Missing("/proc/meminfo", "MemTotal"))?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let (ephemeral_bytes, _) = statvfs(root_dir)?;
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        Ok(Self {
            hostname: read_trimmed("/proc/sys/kernel/hostname")
                .unwrap_or_else(|| "localhost".into()),
            cpu_millis: cpus * 1000,
            memory_bytes,
            ephemeral_bytes,
            os: std::env::consts::OS,
            arch: go_arch(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image,
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_default(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        })
    }
}

/// What is left right now: the eviction signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// `memory.available` (MemAvailable).
    pub memory_available: u64,
    /// `nodefs.available` / capacity of the root dir's filesystem.
    pub nodefs_available: u64,
    pub nodefs_capacity: u64,
    pub pids_used: u64,
    pub pids_max: u64,
}

impl Signals {
    pub fn read(root_dir: &Path) -> Result<Self, MachineError> {
        let mem = std::fs::read_to_string("/proc/meminfo").map_err(|source| MachineError::Io {
            what: "/proc/meminfo".into(),
            source,
        })?;
        let memory_available = meminfo(&mem, "MemAvailable")
            .ok_or(MachineError::Missing("/proc/meminfo", "MemAvailable"))?;
        let (nodefs_capacity, nodefs_available) = statvfs(root_dir)?;
        let pids_used = read_trimmed("/proc/loadavg")
            .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
            .unwrap_or(0);
        let pids_max = read_trimmed("/proc/sys/kernel/pid_max")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        Ok(Self {
            memory_available,
            nodefs_available,
            nodefs_capacity,
            pids_used,
            pids_max,
        })
    }
}

/// Reservations and hard eviction thresholds (kubelet's defaults:
/// `memory.available<100Mi`, `nodefs.available<10%`; pids: 90% used).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub reserved_cpu_millis: u64,
    pub reserved_memory_bytes: u64,
    pub hard: HardThresholds,
    pub pids_used_fraction: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 0,
            hard: HardThresholds::default(),
            pids_used_fraction: 0.90,
        }
    }
}

/// The node's pressure conditions, as decided elsewhere (memory and disk by
/// the eviction monitor, PIDs from [`Signals`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodePressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl NodePressure {
    /// PID pressure from a reading: more than the threshold's share used.
    pub fn pid_pressure(signals: &Signals, thresholds: &Thresholds) -> bool {
        (signals.pids_used as f64) > signals.pids_max as f64 * thresholds.pids_used_fraction
    }
}

fn cpu_quantity(millis: u64) -> Quantity {
    Quantity(if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    })
}

fn bytes_quantity(bytes: u64) -> Quantity {
    Quantity(if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    })
}

/// `(capacity, allocatable)`.
pub fn resources(
    info: &MachineInfo,
    t: &Thresholds,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let list = |cpu: u64, mem: u64, eph: u64| {
        BTreeMap::from([
            ("cpu".to_string(), cpu_quantity(cpu)),
            ("memory".to_string(), bytes_quantity(mem)),
            ("ephemeral-storage".to_string(), bytes_quantity(eph)),
            ("pods".to_string(), Quantity(MAX_PODS.to_string())),
            ("hugepages-1Gi".to_string(), Quantity("0".into())),
            ("hugepages-2Mi".to_string(), Quantity("0".into())),
        ])
    };
    let capacity = list(info.cpu_millis, info.memory_bytes, info.ephemeral_bytes);
    let reserve = |v: Option<&Value>, capacity: u64| v.map_or(0, |v| v.bytes(capacity));
    let allocatable = list(
        info.cpu_millis.saturating_sub(t.reserved_cpu_millis),
        info.memory_bytes
            .saturating_sub(t.reserved_memory_bytes)
            .saturating_sub(reserve(t.hard.memory_available.as_ref(), info.memory_bytes)),
        info.ephemeral_bytes.saturating_sub(reserve(
            t.hard.nodefs_available.as_ref(),
            info.ephemeral_bytes,
        )),
    );
    (capacity, allocatable)
}

/// Node labels kubelet sets on itself.
pub fn node_labels(node_name: &str, info: &MachineInfo) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        ("kubernetes.io/os".to_string(), info.os.to_string()),
        ("kubernetes.io/arch".to_string(), info.arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), info.os.to_string()),
        ("beta.kubernetes.io/arch".to_string(), info.arch.to_string()),
    ])
}

fn condition(
    previous: Option<&NodeStatus>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> NodeCondition {
    let status = if value { "True" } else { "False" };
    let last = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match last {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: transition,
    }
}

/// The Node's status. `previous` keeps conditions' `lastTransitionTime`
/// stable across heartbeats.
pub fn node_status(
    info: &MachineInfo,
    pressure_now: &NodePressure,
    thresholds: &Thresholds,
    internal_ip: &str,
    kubelet_version: &str,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let (capacity, allocatable) = resources(info, thresholds);
    // kubelet's reasons and messages (pkg/kubelet/nodestatus/setters.go).
    let pressure = |value: bool, type_: &str, yes: (&str, &str), no: (&str, &str)| {
        let (reason, message) = if value { yes } else { no };
        condition(previous, type_, value, reason, message, now)
    };
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(vec![
            pressure(
                pressure_now.memory,
                "MemoryPressure",
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
            ),
            pressure(
                pressure_now.disk,
                "DiskPressure",
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ),
            pressure(
                pressure_now.pid,
                "PIDPressure",
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ),
            condition(
                previous,
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status",
                now,
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: info.hostname.clone(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: info.arch.to_string(),
            boot_id: info.boot_id.clone(),
            container_runtime_version: "balsa://0.1.0".into(),
            kernel_version: info.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: kubelet_version.to_string(),
            machine_id: info.machine_id.clone(),
            operating_system: info.os.to_string(),
            os_image: info.os_image.clone(),
            system_uuid: info.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> MachineInfo {
        MachineInfo {
            hostname: "h".into(),
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            ephemeral_bytes: 100 << 30,
            os: "linux",
            arch: "amd64",
            kernel_version: "6".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        }
    }

    #[test]
    fn reads_this_machine() {
        let dir = std::env::temp_dir();
        let m = MachineInfo::read(&dir).unwrap();
        assert!(m.cpu_millis >= 1000 && m.memory_bytes > 0 && m.ephemeral_bytes > 0);
        let s = Signals::read(&dir).unwrap();
        assert!(s.memory_available <= m.memory_bytes && s.nodefs_available <= s.nodefs_capacity);
    }

    #[test]
    fn allocatable_subtracts_thresholds_and_pressure_flips() {
        let (cap, alloc) = resources(&info(), &Thresholds::default());
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, format!("{}Ki", 4 << 20));
        assert_eq!(alloc["memory"].0, format!("{}Ki", (4 << 20) - 100 * 1024));
        assert_eq!(cap["pods"].0, "110");
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        let ok = NodePressure::default();
        let s0 = node_status(
            &info(),
            &ok,
            &Thresholds::default(),
            "10.0.0.1",
            "v1.33.0",
            None,
            t0,
        );
        let low = NodePressure { memory: true, ..ok };
        let s1 = node_status(
            &info(),
            &low,
            &Thresholds::default(),
            "10.0.0.1",
            "v1.33.0",
            Some(&s0),
            t1,
        );
        let get = |s: &NodeStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .clone()
        };
        assert_eq!(get(&s0, "MemoryPressure").status, "False");
        assert_eq!(get(&s1, "MemoryPressure").status, "True");
        assert_eq!(
            get(&s1, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasInsufficientMemory")
        );
        assert_eq!(
            get(&s0, "MemoryPressure").message.as_deref(),
            Some("kubelet has sufficient memory available")
        );
        assert_eq!(
            get(&s1, "MemoryPressure").last_transition_time,
            Some(Time(t1))
        );
        assert_eq!(get(&s1, "Ready").last_transition_time, Some(Time(t0)));
        assert_eq!(get(&s1, "DiskPressure").status, "False");
        assert_eq!(
            get(&s1, "DiskPressure").reason.as_deref(),
            Some("KubeletHasNoDiskPressure")
        );
        // A percentage threshold reserves its share of the capacity.
        let t = Thresholds {
            hard: "memory.available<1Gi,nodefs.available<50%".parse().unwrap(),
            ..Default::default()
        };
        let (_, alloc) = resources(&info(), &t);
        assert_eq!(alloc["memory"].0, format!("{}Ki", 3 << 20));
        assert_eq!(alloc["ephemeral-storage"].0, format!("{}Ki", 50 << 20));
        assert_eq!(node_labels("n1", &info())["kubernetes.io/hostname"], "n1");
    }
}
