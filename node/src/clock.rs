//! Wall-clock timestamps for statuses, events and logs.
//!
//! k8s-openapi builds `jiff` without its `std` feature, so `Timestamp::now`
//! does not exist; this is the one place that reads the system clock.

use k8s_openapi::jiff::Timestamp;

/// The current time (the epoch if the clock is before it, which only a broken
/// machine reports).
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}
