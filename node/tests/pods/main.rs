//! Pod workers against real runtimes: the process runtime (real processes,
//! cgroups when the machine allows) and the simulated one at scale.

mod common;
mod config;
mod lifecycle;
mod probes;
mod sim;
