//! Node-pressure eviction, as kubelet's eviction manager does it: hard
//! thresholds on `memory.available` and `nodefs.available`, the
//! MemoryPressure / DiskPressure conditions, and one pod evicted per
//! monitoring pass in kubelet's order.
//!
//! - [`threshold`]: `--eviction-hard` parsing and the thresholds' values;
//! - [`signals`]: where readings come from ([`signals::SignalSource`]);
//! - [`rank`]: the order pods are evicted in (pure);
//! - [`manager`]: one pass's decisions (pure); the agent's monitor task
//!   (`agent::eviction`) does the IO around it.

pub mod manager;
pub mod rank;
pub mod signals;
pub mod threshold;

pub use manager::{Eviction, Manager, PodUsage, Pressure};
pub use signals::{MachineSignals, Observation, Shared, SignalSource};
pub use threshold::{HardThresholds, Signal, ThresholdError};
