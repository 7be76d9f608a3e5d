//! Reading container logs back as `kubectl logs` wants them: from the CRI
//! files the runtime writes ([`crate::runtime::cri_log`]), with `tailLines`,
//! `timestamps`, `sinceTime`, `limitBytes`, and `follow`. `--previous` is
//! the file of the previous attempt ([`crate::runtime::Runtime::log_path`]
//! with `restartCount - 1`).
//!
//! Partial records (`P`) are joined back into one line; a line's timestamp is
//! that of its first piece.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::runtime::cri_log::parse_line;

#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    pub since_time: Option<Timestamp>,
    pub limit_bytes: Option<usize>,
}

/// Which instance of a container a log request reads: the number of the
/// attempt whose file to read (see [`crate::runtime::Runtime::log_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    pub attempt: u32,
    /// The attempt to read instead when `attempt`'s file does not exist. A
    /// terminated state is ambiguous: it is the last instance (attempt
    /// `restartCount`), or, for the moment between an exit and an immediate
    /// restart, the one before (the count already moved on, the new
    /// instance has no file yet).
    pub fallback: Option<u32>,
    /// Still running: `follow` waits for more.
    pub running: bool,
}

/// kubelet's `validateContainerLogStatus`: which instance of `container`
/// to read (the current one, or with `previous` the last terminated one),
/// or kubelet's words for why there is none (answered as HTTP 400).
pub fn instance(
    pod: &str,
    status: &PodStatus,
    container: &str,
    previous: bool,
) -> Result<Instance, String> {
    let find = |list: &Option<Vec<ContainerStatus>>| {
        list.iter().flatten().find(|c| c.name == container).cloned()
    };
    let cs = find(&status.container_statuses)
        .or_else(|| find(&status.init_container_statuses))
        .ok_or_else(|| format!("container {container:?} in pod {pod:?} is not available"))?;
    let n = cs.restart_count.max(0) as u32;
    let state = cs.state.clone().unwrap_or_default();
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let last_id = last.is_some_and(|t| t.container_id.as_deref().is_some_and(|id| !id.is_empty()));
    let at = |attempt: u32, fallback: Option<u32>, running: bool| Instance {
        attempt,
        fallback,
        running,
    };
    if previous {
        if !last_id {
            return Err(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ));
        }
        let fallback = state.terminated.is_some().then(|| n.saturating_sub(2));
        return Ok(at(n.saturating_sub(1), fallback, false));
    }
    if state.running.is_some() {
        return Ok(at(n, None, true));
    }
    if let Some(t) = &state.terminated {
        if t.container_id.as_deref().is_some_and(|id| !id.is_empty()) {
            return Ok(at(n, Some(n.saturating_sub(1)), false));
        }
        if last_id {
            return Ok(at(n.saturating_sub(1), None, false));
        }
        return Err(format!(
            "container {container:?} in pod {pod:?} is terminated"
        ));
    }
    if last.is_some() {
        if !last_id {
            return Err(format!(
                "container {container:?} in pod {pod:?} is terminated"
            ));
        }
        return Ok(at(n.saturating_sub(1), None, false));
    }
    match state.waiting.and_then(|w| w.reason) {
        Some(reason) => Err(match reason.as_str() {
            "ErrImagePull" => format!(
                "container {container:?} in pod {pod:?} is waiting to start: image can't be pulled"
            ),
            "ImagePullBackOff" => format!(
                "container {container:?} in pod {pod:?} is waiting to start: trying and failing to pull image"
            ),
            _ => format!("container {container:?} in pod {pod:?} is waiting to start: {reason}"),
        }),
        None => Err(format!(
            "container {container:?} in pod {pod:?} is waiting to start - no logs yet"
        )),
    }
}

/// Whole records of `raw` as log lines: `(time of the first piece, line with
/// its newline)`. A trailing partial line (no `F` yet) is returned as is.
fn lines(raw: &[u8]) -> Vec<(Timestamp, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(Timestamp, Vec<u8>)> = None;
    for record in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(rec) = parse_line(record) else {
            continue;
        };
        let (_, buf) = current.get_or_insert_with(|| (rec.time, Vec::new()));
        buf.extend_from_slice(&rec.content);
        if !rec.partial {
            if let Some((time, mut line)) = current.take() {
                line.push(b'\n');
                out.push((time, line));
            }
        }
    }
    if let Some(rest) = current {
        out.push(rest);
    }
    out
}

/// Render a log file's contents per `opts`.
pub fn render(raw: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut all = lines(raw);
    if let Some(since) = opts.since_time {
        all.retain(|(t, _)| *t >= since);
    }
    if let Some(n) = opts.tail_lines {
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
    }
    let mut out = Vec::new();
    for (time, line) in all {
        if opts.timestamps {
            out.extend_from_slice(time.to_string().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    out
}

/// Cut `chunk` to what is left of the byte budget.
fn spend(mut chunk: Vec<u8>, budget: &mut usize) -> Vec<u8> {
    chunk.truncate(*budget);
    *budget -= chunk.len();
    chunk
}

/// Read and render a log file; a missing file is an empty log.
pub async fn read(path: &Path, opts: &LogOptions) -> std::io::Result<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(raw) => Ok(render(&raw, opts)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Send what [`read`] would, then every new line as it is written, until
/// `done` resolves (the container exited) and the file is drained, or the
/// receiver goes away. `tail_lines` and `since_time` apply to what exists at
/// the start; `limit_bytes` to the whole stream.
pub async fn follow(
    path: &Path,
    opts: &LogOptions,
    done: impl std::future::Future<Output = ()>,
    out: mpsc::Sender<Vec<u8>>,
) -> std::io::Result<()> {
    let raw = match tokio::fs::read(path).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    // Only whole records are consumed; a record being written is re-read.
    let mut offset = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut budget = opts.limit_bytes.unwrap_or(usize::MAX);
    let first = render(&raw[..offset], opts);
    let first = spend(first, &mut budget);
    if !first.is_empty() && out.send(first).await.is_err() {
        return Ok(());
    }
    tokio::pin!(done);
    let mut finished = false;
    let live = LogOptions {
        timestamps: opts.timestamps,
        ..Default::default()
    };
    let mut pending = Vec::new();
    loop {
        if budget == 0 {
            return Ok(());
        }
        if let Ok(mut file) = tokio::fs::File::open(path).await {
            file.seek(std::io::SeekFrom::Start(offset as u64)).await?;
            let mut fresh = Vec::new();
            file.read_to_end(&mut fresh).await?;
            offset += fresh.len();
            pending.extend_from_slice(&fresh);
        }
        // Send whole logical lines only (up to the last F record).
        let whole = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let complete: Vec<u8> = pending.drain(..whole).collect();
        let rendered = render(&complete, &live);
        let partial_tail = rendered.last().is_some_and(|b| *b != b'\n');
        if partial_tail && !finished {
            // A long line still being written: keep its pieces for later.
            let mut back = complete;
            back.extend_from_slice(&pending);
            pending = back;
        } else if !rendered.is_empty() {
            let chunk = spend(rendered, &mut budget);
            if out.send(chunk).await.is_err() {
                return Ok(());
            }
        }
        if finished {
            return Ok(());
        }
        tokio::select! {
            _ = &mut done => finished = true,
            // Nobody reads any more (`kubectl logs -f` interrupted).
            _ = out.closed() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri_log::{format_line, Stream};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sample() -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend(format_line(
            ts("2024-01-01T00:00:01Z"),
            Stream::Stdout,
            false,
            b"one",
        ));
        raw.extend(format_line(
            ts("2024-01-01T00:00:02Z"),
            Stream::Stderr,
            true,
            b"tw",
        ));
        raw.extend(format_line(
            ts("2024-01-01T00:00:03Z"),
            Stream::Stderr,
            false,
            b"o",
        ));
        raw.extend(format_line(
            ts("2024-01-01T00:00:04Z"),
            Stream::Stdout,
            false,
            b"three",
        ));
        raw
    }

    #[test]
    fn renders_tail_timestamps_since_and_limit() {
        let raw = sample();
        assert_eq!(render(&raw, &LogOptions::default()), b"one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(render(&raw, &tail)).unwrap(),
            "2024-01-01T00:00:02Z two\n2024-01-01T00:00:04Z three\n"
        );
        let since = LogOptions {
            since_time: Some(ts("2024-01-01T00:00:03Z")),
            ..Default::default()
        };
        assert_eq!(render(&raw, &since), b"three\n");
        let limit = LogOptions {
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(render(&raw, &limit), b"one\nt");
    }

    fn container(state: serde_json::Value, last: serde_json::Value, restarts: i32) -> PodStatus {
        serde_json::from_value(serde_json::json!({"containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false,
            "restartCount": restarts, "state": state, "lastState": last,
        }]}))
        .unwrap()
    }

    #[test]
    fn instances_are_chosen_as_kubelet_does() {
        let id = serde_json::json!({"exitCode": 1, "containerID": "process://x"});
        let running = serde_json::json!({"running": {}});
        let creating = serde_json::json!({"waiting": {"reason": "ContainerCreating"}});
        let crash = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let none = serde_json::json!({});
        let s = container(creating.clone(), none.clone(), 0);
        assert_eq!(
            instance("web", &s, "app", false).unwrap_err(),
            r#"container "app" in pod "web" is waiting to start: ContainerCreating"#
        );
        assert_eq!(
            instance("web", &s, "other", false).unwrap_err(),
            r#"container "other" in pod "web" is not available"#
        );
        let s = container(running.clone(), none.clone(), 0);
        assert_eq!(
            instance("web", &s, "app", false).unwrap(),
            Instance {
                attempt: 0,
                fallback: None,
                running: true
            }
        );
        assert_eq!(
            instance("web", &s, "app", true).unwrap_err(),
            r#"previous terminated container "app" in pod "web" not found"#
        );
        let s = container(running, serde_json::json!({"terminated": id.clone()}), 2);
        assert_eq!(instance("web", &s, "app", true).unwrap().attempt, 1);
        assert_eq!(instance("web", &s, "app", false).unwrap().attempt, 2);
        // Crash-looping: both read the instance that ended.
        let s = container(crash, serde_json::json!({"terminated": id.clone()}), 3);
        assert_eq!(instance("web", &s, "app", false).unwrap().attempt, 2);
        assert_eq!(instance("web", &s, "app", true).unwrap().attempt, 2);
        let s = container(serde_json::json!({"terminated": id}), none, 0);
        assert_eq!(
            instance("web", &s, "app", false).unwrap(),
            Instance {
                attempt: 0,
                fallback: Some(0),
                running: false
            }
        );
        let s = container(
            serde_json::json!({"terminated": {"exitCode": 128}}),
            serde_json::json!({}),
            0,
        );
        assert_eq!(
            instance("web", &s, "app", false).unwrap_err(),
            r#"container "app" in pod "web" is terminated"#
        );
    }

    #[tokio::test]
    async fn follow_streams_new_lines_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            format_line(ts("2024-01-01T00:00:01Z"), Stream::Stdout, false, b"old"),
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let p = path.clone();
        let task = tokio::spawn(async move {
            follow(
                &p,
                &LogOptions::default(),
                async {
                    let _ = done_rx.await;
                },
                tx,
            )
            .await
        });
        assert_eq!(rx.recv().await.unwrap(), b"old\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(
            &mut f,
            &format_line(ts("2024-01-01T00:00:02Z"), Stream::Stdout, false, b"new"),
        )
        .unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"new\n");
        done_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(rx.recv().await.is_none());
    }
}
