//! When the Node status is written, as kubelet decides it since node Leases
//! carry the heartbeat: the status is computed every beat
//! (`nodeStatusUpdateFrequency`, 10 s) but patched only when it differs
//! from the Node the API holds, heartbeat times aside, or when
//! `nodeStatusReportFrequency` (5 min) has passed since the last report
//! (kubelet's `tryUpdateNodeStatus` with `nodeStatusHasChanged`). Liveness
//! is the Lease's job, renewed every beat regardless.
//!
//! Comparing with the API's copy rather than with the last write is what
//! lets a status someone else changed (the node lifecycle controller's
//! `Unknown` after a partition) be put right at the next beat.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};

/// kubelet's default `nodeStatusReportFrequency`.
pub const REPORT_EVERY: Duration = Duration::from_secs(5 * 60);

/// Whether `now` differs from `before` in anything but the conditions'
/// heartbeat times (upstream `nodeStatusHasChanged`; conditions compared
/// whatever their order).
pub fn changed(before: Option<&NodeStatus>, now: &NodeStatus) -> bool {
    let Some(before) = before else {
        return true;
    };
    let conditions = |s: &NodeStatus| {
        let mut cs: Vec<NodeCondition> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| NodeCondition {
                last_heartbeat_time: None,
                ..c.clone()
            })
            .collect();
        cs.sort_by(|a, b| a.type_.cmp(&b.type_));
        cs
    };
    if conditions(before) != conditions(now) {
        return true;
    }
    let rest = |s: &NodeStatus| NodeStatus {
        conditions: None,
        ..s.clone()
    };
    rest(before) != rest(now)
}

/// The last report and how often one is due anyway.
#[derive(Debug)]
pub struct Cadence {
    every: Duration,
    last: Option<Instant>,
}

impl Cadence {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to write `now` over the API's `before` at `at`.
    pub fn due(&self, before: Option<&NodeStatus>, now: &NodeStatus, at: Instant) -> bool {
        let stale = self
            .last
            .is_none_or(|last| at.saturating_duration_since(last) >= self.every);
        stale || changed(before, now)
    }

    pub fn reported(&mut self, at: Instant) {
        self.last = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn cond(type_: &str, status: &str, beat: i64) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some("r".into()),
            message: Some("m".into()),
            last_heartbeat_time: Some(Time(Timestamp::from_second(beat).expect("time"))),
            last_transition_time: Some(Time(Timestamp::from_second(1).expect("time"))),
        }
    }

    fn status(conds: Vec<NodeCondition>) -> NodeStatus {
        NodeStatus {
            conditions: Some(conds),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_heartbeat_time_alone_is_no_change() {
        let before = status(vec![
            cond("Ready", "True", 10),
            cond("DiskPressure", "False", 10),
        ]);
        let beat = status(vec![
            cond("DiskPressure", "False", 20),
            cond("Ready", "True", 20),
        ]);
        assert!(!changed(Some(&before), &beat));
        let unknown = status(vec![
            cond("Ready", "Unknown", 10),
            cond("DiskPressure", "False", 10),
        ]);
        assert!(
            changed(Some(&unknown), &beat),
            "a condition's status differs"
        );
        let mut moved = beat.clone();
        moved.addresses = Some(vec![Default::default()]);
        assert!(changed(Some(&before), &moved), "a field besides conditions");
        let fewer = status(vec![cond("Ready", "True", 20)]);
        assert!(changed(Some(&before), &fewer));
        assert!(changed(None, &beat), "no Node status yet");
    }

    #[test]
    fn an_unchanged_status_is_reported_every_report_period_only() {
        let t0 = Instant::now();
        let s = status(vec![cond("Ready", "True", 10)]);
        let beat = status(vec![cond("Ready", "True", 20)]);
        let mut c = Cadence::new(REPORT_EVERY);
        assert!(c.due(Some(&s), &beat, t0), "the first beat reports");
        c.reported(t0);
        let heartbeat = Duration::from_secs(10);
        assert!(!c.due(Some(&s), &beat, t0 + heartbeat));
        assert!(!c.due(Some(&s), &beat, t0 + REPORT_EVERY - heartbeat));
        assert!(c.due(Some(&s), &beat, t0 + REPORT_EVERY));
        // A change is reported at the next beat, whenever it comes.
        let not_ready = status(vec![cond("Ready", "False", 20)]);
        assert!(c.due(Some(&s), &not_ready, t0 + heartbeat));
        assert_eq!(REPORT_EVERY, Duration::from_secs(300), "kubelet's default");
    }
}
