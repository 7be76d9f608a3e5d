//! Pod status as kubelet computes it, as pure functions of the spec and the
//! container statuses: the phase (kubelet's `getPhase`) and the conditions
//! (`PodReadyToStartContainers`, `Initialized`, `ContainersReady`, `Ready`,
//! `PodScheduled`), with `lastTransitionTime` moving only when a condition's
//! status changes.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

pub fn running(started_at: Timestamp) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(started_at)),
        }),
        ..Default::default()
    }
}

pub fn terminated(t: ContainerStateTerminated) -> ContainerState {
    ContainerState {
        terminated: Some(t),
        ..Default::default()
    }
}

/// A container status before anything ran.
pub fn initial(name: &str, image: &str, reason: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(waiting(reason, None)),
        ..Default::default()
    }
}

fn terminated_of(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.state.as_ref().and_then(|st| st.terminated.as_ref())
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn succeeded(s: &ContainerStatus) -> bool {
    terminated_of(s).is_some_and(|t| t.exit_code == 0)
}

/// kubelet's `getPhase`. `terminal` is set once the worker has stopped every
/// container for good (deletion, or nothing left to restart).
pub fn phase(spec: &PodSpec, status: &PodStatus, terminal: bool) -> &'static str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut pending_init = 0;
    for s in status.init_container_statuses.iter().flatten() {
        match terminated_of(s) {
            Some(t) if t.exit_code == 0 => {}
            Some(_) if policy == "Never" => return FAILED,
            _ => pending_init += 1,
        }
    }
    let (mut running, mut waiting, mut stopped, mut ok) = (0, 0, 0, 0);
    for s in status.container_statuses.iter().flatten() {
        let st = s.state.as_ref();
        if st.is_some_and(|st| st.running.is_some()) {
            running += 1;
        } else if let Some(t) = st.and_then(|st| st.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                ok += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if pending_init > 0 && !terminal {
        return PENDING;
    }
    if terminal {
        let total = status.container_statuses.as_ref().map_or(0, Vec::len);
        return if running == 0 && ok == total && pending_init == 0 {
            SUCCEEDED
        } else {
            FAILED
        };
    }
    if waiting > 0 {
        return PENDING;
    }
    if running > 0 {
        return RUNNING;
    }
    if stopped > 0 {
        return match policy {
            "Always" => RUNNING,
            _ if stopped == ok => SUCCEEDED,
            "Never" => FAILED,
            _ => RUNNING,
        };
    }
    PENDING
}

/// Set a condition, moving `lastTransitionTime` only on a status change.
pub fn set_condition(
    status: &mut PodStatus,
    type_: &str,
    value: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(Time(now));
            }
            c.status = value.to_string();
            c.reason = reason.map(str::to_string);
            c.message = message;
        }
        None => conditions.push(PodCondition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: Some(Time(now)),
            ..Default::default()
        }),
    }
}

pub fn condition<'a>(status: &'a PodStatus, type_: &str) -> Option<&'a PodCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn names(list: Vec<&ContainerStatus>) -> String {
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    format!("[{}]", names.join(" "))
}

/// Recompute phase and the container-derived conditions.
pub fn recompute(spec: &PodSpec, status: &mut PodStatus, terminal: bool, now: Timestamp) {
    let phase = phase(spec, status, terminal);
    status.phase = Some(phase.to_string());
    let completed = phase == SUCCEEDED;
    let incomplete: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|s| !succeeded(s))
        .collect();
    let initialized = incomplete.is_empty() || completed;
    let init_message =
        (!initialized).then(|| format!("containers with incomplete status: {}", names(incomplete)));
    let unready: Vec<&ContainerStatus> = status
        .container_statuses
        .iter()
        .flatten()
        .filter(|s| !(s.ready && is_running(s)))
        .collect();
    let ready = unready.is_empty();
    let (ready_reason, ready_message) = match (ready, completed) {
        (true, _) => (None, None),
        (false, true) => (Some("PodCompleted"), None),
        (false, false) => (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                names(unready)
            )),
        ),
    };
    let init_reason = match (initialized, completed) {
        (true, true) => Some("PodCompleted"),
        (true, false) => None,
        (false, _) => Some("ContainersNotInitialized"),
    };
    set_condition(
        status,
        "Initialized",
        initialized,
        init_reason,
        init_message,
        now,
    );
    set_condition(
        status,
        "ContainersReady",
        ready,
        ready_reason,
        ready_message.clone(),
        now,
    );
    set_condition(status, "Ready", ready, ready_reason, ready_message, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: &str) -> PodSpec {
        PodSpec {
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(terminated(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            })),
            ..initial(name, "img", "x")
        }
    }

    fn status(containers: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            container_statuses: Some(containers),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let now = crate::clock::now();
        let run = ContainerStatus {
            state: Some(running(now)),
            ..initial("a", "img", "x")
        };
        assert_eq!(
            phase(
                &spec("Always"),
                &status(vec![initial("a", "i", "ContainerCreating")]),
                false
            ),
            PENDING
        );
        assert_eq!(
            phase(
                &spec("Always"),
                &status(vec![run.clone(), exited("b", 1)]),
                false
            ),
            RUNNING
        );
        assert_eq!(
            phase(
                &spec("Never"),
                &status(vec![exited("a", 0), exited("b", 1)]),
                false
            ),
            FAILED
        );
        assert_eq!(
            phase(&spec("Never"), &status(vec![exited("a", 0)]), false),
            SUCCEEDED
        );
        assert_eq!(
            phase(&spec("OnFailure"), &status(vec![exited("a", 1)]), false),
            RUNNING
        );
        assert_eq!(
            phase(&spec("Always"), &status(vec![exited("a", 0)]), false),
            RUNNING
        );
        assert_eq!(
            phase(&spec("Always"), &status(vec![exited("a", 143)]), true),
            FAILED
        );
        assert_eq!(
            phase(&spec("Always"), &status(vec![exited("a", 0)]), true),
            SUCCEEDED
        );
        let mut with_init = status(vec![initial("a", "i", "PodInitializing")]);
        with_init.init_container_statuses = Some(vec![exited("init", 1)]);
        assert_eq!(phase(&spec("Never"), &with_init, false), FAILED);
        assert_eq!(phase(&spec("Always"), &with_init, false), PENDING);
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let t1: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let mut st = PodStatus::default();
        set_condition(&mut st, "Ready", false, None, None, t1);
        set_condition(&mut st, "Ready", false, Some("x"), None, t2);
        assert_eq!(
            condition(&st, "Ready").unwrap().last_transition_time,
            Some(Time(t1))
        );
        set_condition(&mut st, "Ready", true, None, None, t2);
        assert_eq!(
            condition(&st, "Ready").unwrap().last_transition_time,
            Some(Time(t2))
        );
    }
}
