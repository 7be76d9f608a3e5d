//! Wall-clock timestamps for statuses, events and conditions, for every
//! component.
//!
//! k8s-openapi builds `jiff` without its `std` feature, so `Timestamp::now`
//! does not exist; this is the one place that reads the system clock for them.

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

/// Now, to the second: what Kubernetes' `Time` carries, so a value compares
/// equal to itself after a round trip through the API.
pub fn now_to_second() -> Timestamp {
    Timestamp::from_second(now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_whole_seconds_drop_the_fraction() {
        assert!(now().as_second() > 1_577_836_800);
        assert_eq!(now_to_second().subsec_nanosecond(), 0);
    }
}
