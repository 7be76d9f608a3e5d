//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket) and the
//! lifecycle hooks' handlers, as kubelet runs them.
//!
//! Per container instance [`run`] drives all three probes and publishes a
//! [`ProbeState`]: the startup probe runs first (liveness and readiness wait
//! for it); a liveness or startup probe that reaches its failure threshold
//! sets [`ProbeState::failed`] and stops, and the worker restarts the
//! container; readiness flips `ready` after `successThreshold` successes /
//! `failureThreshold` failures in a row and runs until the container ends.
//! A probe's "second" is [`ProbeState`]'s caller's `unit` (1 s in production,
//! shorter in tests).

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::events::{Emitter, EventType};
use crate::runtime::{ContainerId, PodKey, Runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    pub started: bool,
    pub ready: bool,
    /// A liveness or startup probe gave up: the container must be restarted.
    pub failed: Option<(ProbeKind, String)>,
}

/// One handler, from a probe or a lifecycle hook.
pub enum Action<'a> {
    Exec(&'a ExecAction),
    Http(&'a HTTPGetAction),
    Tcp(&'a TCPSocketAction),
    Sleep(Duration),
    Unsupported(&'static str),
}

impl<'a> Action<'a> {
    pub fn of_probe(p: &'a Probe) -> Self {
        if let Some(e) = &p.exec {
            Action::Exec(e)
        } else if let Some(h) = &p.http_get {
            Action::Http(h)
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp(t)
        } else if p.grpc.is_some() {
            Action::Unsupported("grpc probes are not supported by this node")
        } else {
            Action::Unsupported("probe has no handler")
        }
    }

    pub fn of_hook(h: &'a LifecycleHandler) -> Self {
        if let Some(e) = &h.exec {
            Action::Exec(e)
        } else if let Some(g) = &h.http_get {
            Action::Http(g)
        } else if let Some(t) = &h.tcp_socket {
            Action::Tcp(t)
        } else if let Some(s) = &h.sleep {
            Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64))
        } else {
            Action::Unsupported("lifecycle hook has no handler")
        }
    }
}

/// What one probe or hook run needs to reach the container.
pub struct Target<'a> {
    pub runtime: &'a dyn Runtime,
    pub id: &'a ContainerId,
    pub pod_ip: &'a str,
    pub container: &'a Container,
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in container"))
        }
    }
}

/// Run `action` once; `Ok(())` is success, `Err` the failure message
/// (kubelet's wording where it has one).
pub async fn run_once(
    action: &Action<'_>,
    target: &Target<'_>,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        Action::Exec(e) => {
            let command = e.command.clone().unwrap_or_default();
            match target.runtime.exec(target.id, &command, timeout).await {
                Ok(out) => match out.exit_code {
                    Some(0) => Ok(()),
                    Some(code) => Err(if out.output.trim().is_empty() {
                        format!("command {command:?} exited with {code}")
                    } else {
                        out.output.trim_end().to_string()
                    }),
                    None => Err(format!("command {command:?} timed out")),
                },
                Err(e) => Err(e.to_string()),
            }
        }
        Action::Http(h) => {
            let port = port_of(&h.port, target.container)?;
            let host = h
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or(target.pod_ip);
            if h.scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
            {
                return Err("HTTPS probes are not supported by this node".into());
            }
            let path = h.path.as_deref().unwrap_or("/");
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect();
            let status = tokio::time::timeout(timeout, http_get(host, port, path, &headers))
                .await
                .map_err(|_| {
                    format!("Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
                })??;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {status}"))
            }
        }
        Action::Tcp(t) => {
            let port = port_of(&t.port, target.container)?;
            let host = t
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or(target.pod_ip);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {e}")),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        }
        Action::Sleep(d) => {
            tokio::time::sleep((*d).min(timeout)).await;
            Ok(())
        }
        Action::Unsupported(why) => Err((*why).to_string()),
    }
}

/// A minimal HTTP/1.1 GET: the status code of the answer.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: connect: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Accept: */*\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))
}

struct Params {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn params(p: &Probe, unit: Duration) -> Params {
    let secs = |v: Option<i32>, default: i32| unit * v.unwrap_or(default).max(0) as u32;
    Params {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds.filter(|v| *v > 0), 10),
        timeout: secs(p.timeout_seconds.filter(|v| *v > 0), 1),
        success_threshold: p.success_threshold.filter(|v| *v > 0).unwrap_or(1) as u32,
        failure_threshold: p.failure_threshold.filter(|v| *v > 0).unwrap_or(3) as u32,
    }
}

/// Everything [`run`] needs.
pub struct ProbeContext<'a> {
    pub target: Target<'a>,
    pub pod: &'a PodKey,
    pub field_path: String,
    pub events: &'a Emitter,
    pub unit: Duration,
}

impl ProbeContext<'_> {
    /// Probe until the result is decided: `Ok` after `success_threshold`
    /// successes in a row, `Err(last message)` after `failure_threshold`
    /// failures. `on_change(ready)` sees every flip (readiness).
    async fn probe_loop(
        &self,
        kind: ProbeKind,
        probe: &Probe,
        stop_on_success: bool,
        stop_on_failure: bool,
        mut on_change: impl FnMut(bool),
    ) -> Result<(), String> {
        let p = params(probe, self.unit);
        let action = Action::of_probe(probe);
        tokio::time::sleep(p.initial_delay).await;
        let (mut successes, mut failures) = (0u32, 0u32);
        let mut current: Option<bool> = None;
        loop {
            match run_once(&action, &self.target, p.timeout).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if successes >= p.success_threshold && current != Some(true) {
                        current = Some(true);
                        on_change(true);
                        if stop_on_success {
                            return Ok(());
                        }
                    }
                }
                Err(message) => {
                    failures += 1;
                    successes = 0;
                    self.events.emit(
                        self.pod,
                        Some(self.field_path.clone()),
                        EventType::Warning,
                        "Unhealthy",
                        format!("{} probe failed: {message}", kind.as_str()),
                    );
                    if failures >= p.failure_threshold && current != Some(false) {
                        current = Some(false);
                        on_change(false);
                        if stop_on_failure {
                            return Err(message);
                        }
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
    }
}

/// Drive the container's probes; see the module doc. Runs until the caller
/// drops it (the container ended) or a liveness/startup probe failed.
pub async fn run(ctx: ProbeContext<'_>, state: &watch::Sender<ProbeState>) {
    let c = ctx.target.container;
    if let Some(startup) = &c.startup_probe {
        if let Err(message) = ctx
            .probe_loop(ProbeKind::Startup, startup, true, true, |_| {})
            .await
        {
            state.send_modify(|s| s.failed = Some((ProbeKind::Startup, message)));
            return;
        }
    }
    state.send_modify(|s| {
        s.started = true;
        if c.readiness_probe.is_none() {
            s.ready = true;
        }
    });
    let liveness = async {
        if let Some(probe) = &c.liveness_probe {
            if let Err(message) = ctx
                .probe_loop(ProbeKind::Liveness, probe, false, true, |_| {})
                .await
            {
                state.send_modify(|s| s.failed = Some((ProbeKind::Liveness, message)));
            }
        }
    };
    let readiness = async {
        if let Some(probe) = &c.readiness_probe {
            let _ = ctx
                .probe_loop(ProbeKind::Readiness, probe, false, false, |ready| {
                    state.send_modify(|s| s.ready = ready)
                })
                .await;
        }
    };
    tokio::join!(liveness, readiness);
}
